// Package buildinfo carries the version stamped into the binary at link
// time (-ldflags "-X github.com/otagw/otagw/internal/buildinfo.Version=v1.2.3"),
// with the VCS revision from the Go build info as a fallback.
//
//	fmt.Println(buildinfo.String()) // "otagw v1.2.3 (abc1234, go1.26.8 linux/arm64)"
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version is set by the linker; "dev" for an unstamped build.
var Version = "dev"

// Revision returns the VCS revision the binary was built from, if known.
func Revision() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty && rev != "" {
		rev += "-dirty"
	}
	return rev
}

// String is the one-line version banner.
func String() string {
	rev := Revision()
	if rev == "" {
		rev = "unknown revision"
	}
	return fmt.Sprintf("otagw %s (%s, %s %s/%s)", Version, rev, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
