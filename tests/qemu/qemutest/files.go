package qemutest

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/u-root/u-root/pkg/cpio"
)

// File is a host file placed in the guest's initramfs at Dst (an absolute
// guest path; parent directories are created).
type File struct {
	Src, Dst string
	Mode     os.FileMode
}

var lddPath = regexp.MustCompile(`(?m)(?:=> )?(/\S+) \(0x`)

// Binaries returns the host programs (looked up in PATH) as Files at
// /bin/NAME, with the shared libraries ldd lists for them at their host
// paths, so that a dynamically linked tool (candump, ip) runs in the guest.
// The error names the missing program or the ldd failure.
func Binaries(names ...string) ([]File, error) {
	var files []File
	libs := map[string]bool{}
	for _, n := range names {
		p, err := exec.LookPath(n)
		if err != nil {
			return nil, fmt.Errorf("guest binary %s: %w", n, err)
		}
		files = append(files, File{Src: p, Dst: "/bin/" + filepath.Base(p), Mode: 0o755})
		out, err := exec.Command("ldd", p).CombinedOutput()
		if err != nil {
			if strings.Contains(string(out), "not a dynamic executable") {
				continue
			}
			return nil, fmt.Errorf("ldd %s: %w: %s", p, err, out)
		}
		for _, m := range lddPath.FindAllStringSubmatch(string(out), -1) {
			libs[m[1]] = true
		}
	}
	var ls []string
	for l := range libs {
		ls = append(ls, l)
	}
	sort.Strings(ls)
	for _, l := range ls {
		files = append(files, File{Src: l, Dst: l, Mode: 0o755})
	}
	return files, nil
}

// fileRecords turns files into cpio records, directories first.
func fileRecords(files []File) ([]cpio.Record, error) {
	var recs []cpio.Record
	dirs := map[string]bool{"/": true, "/dev": true, "/proc": true, "/sys": true, "/tmp": true, "/modules": true}
	var mkdirs func(d string)
	mkdirs = func(d string) {
		if dirs[d] {
			return
		}
		mkdirs(path.Dir(d))
		dirs[d] = true
		recs = append(recs, cpio.Directory(strings.TrimPrefix(d, "/"), 0o755))
	}
	for _, f := range files {
		if !path.IsAbs(f.Dst) {
			return nil, fmt.Errorf("guest file %s: destination %q is not absolute", f.Src, f.Dst)
		}
		data, err := os.ReadFile(f.Src)
		if err != nil {
			return nil, fmt.Errorf("guest file: %w", err)
		}
		mkdirs(path.Dir(f.Dst))
		mode := f.Mode
		if mode == 0 {
			mode = 0o644
		}
		recs = append(recs, cpio.StaticRecord(data, cpio.Info{Name: strings.TrimPrefix(f.Dst, "/"), Mode: cpio.S_IFREG | uint64(mode.Perm())}))
	}
	return recs, nil
}
