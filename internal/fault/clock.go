//go:build !faultpoints

package fault

import "time"

// Clock is the daemon's clock for tests: nil (the real clock) without the
// faultpoints tag.
func Clock() func() time.Time { return nil }
