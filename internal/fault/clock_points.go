//go:build faultpoints

package fault

import (
	"os"
	"strings"
	"time"
)

// Clock, in a binary built with the faultpoints tag and $OTAGW_CLOCK_FILE
// set, reads the time from that file (RFC 3339) at every call, so an
// end-to-end test moves the daemon's clock (maintenance windows) by
// rewriting the file instead of sleeping. A file that is missing or does
// not parse means the real time.
func Clock() func() time.Time {
	path := os.Getenv("OTAGW_CLOCK_FILE")
	if path == "" {
		return nil
	}
	return func() time.Time {
		b, err := os.ReadFile(path)
		if err != nil {
			return time.Now()
		}
		t, err := time.Parse(time.RFC3339, strings.TrimSpace(string(b)))
		if err != nil {
			return time.Now()
		}
		return t
	}
}
