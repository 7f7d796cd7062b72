//go:build faultpoints

package fault

import (
	"fmt"
	"os"
	"syscall"
	"time"
)

// Point kills the process with SIGKILL when $OTAGW_FAULT names it.
func Point(name string) {
	if os.Getenv("OTAGW_FAULT") != name {
		return
	}
	if d, err := time.ParseDuration(os.Getenv("OTAGW_FAULT_HOLD")); err == nil {
		time.Sleep(d)
	}
	fmt.Fprintf(os.Stderr, "fault point %s: SIGKILL\n", name)
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // the signal is on its way
}
