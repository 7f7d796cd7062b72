//go:build !faultpoints

package fault

import "github.com/jonboulle/clockwork"

// Clock is the daemon's clock for tests: nil (the daemon's real clock)
// without the faultpoints tag.
func Clock() clockwork.Clock { return nil }
