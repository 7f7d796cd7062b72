//go:build !faultpoints

// Package fault marks the daemon's persistence points so that tests can
// kill it at each one: a binary built with `-tags faultpoints` SIGKILLs
// itself when it reaches the point named by $OTAGW_FAULT (and, with
// $OTAGW_FAULT_HOLD set to a duration, first waits that long). The
// shipped binary is built without the tag, where Point does nothing.
//
//	fault.Point("install.switched") // after the boot environment names the new slot
package fault

// Point is a persistence point; without the faultpoints tag it is a no-op.
func Point(name string) {}
