package stm32sim

import (
	"bytes"
	"context"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/otagw/otagw/downstream/stm32/chips"
)

// TestStm32flashConformance drives the simulator on a pseudo-terminal with
// Debian's stm32flash: write + verify, then read back, for an F1 part
// (Erase 0x43) and an F4 part (Extended Erase 0x44). A pseudo-terminal
// drops PARENB, so the line is 8N1 here.
func TestStm32flashConformance(t *testing.T) {
	bin, err := exec.LookPath("stm32flash")
	if err != nil {
		t.Skip("stm32flash not installed (scripts/test-deps.sh installs it)")
	}
	for _, tc := range []struct {
		pid   uint16
		size  int
		erase byte
	}{
		{0x410, 20*1024 + 100, 0x43},
		{0x413, 40*1024 + 12, 0x44},
	} {
		chip, _ := chips.Lookup(tc.pid)
		t.Run(chip.Family, func(t *testing.T) {
			dir := t.TempDir()
			img := make([]byte, tc.size)
			rand.New(rand.NewSource(int64(tc.pid))).Read(img)
			in := filepath.Join(dir, "fw.bin")
			os.WriteFile(in, img, 0o644)
			sim := New(chip, Options{})
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			p, err := ServePTY(ctx, sim)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			run := func(args ...string) string {
				cmd := exec.CommandContext(ctx, bin, append([]string{"-m", "8n1", "-b", "115200"}, append(args, p.Path)...)...)
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("stm32flash %v: %v\n%s", args, err, out)
				}
				return string(out)
			}
			out := run("-w", in, "-v")
			if !bytes.Contains([]byte(out), []byte("Done.")) {
				t.Errorf("stm32flash -w -v output lacks Done.:\n%s", out)
			}
			st := sim.Stats()
			if st.Commands[tc.erase] == 0 {
				t.Errorf("stm32flash did not use erase 0x%02x; commands %v", tc.erase, st.Commands)
			}
			if got := sim.Flash()[:len(img)]; !bytes.Equal(got, img) {
				t.Fatalf("simulator flash differs from the image after stm32flash -w -v")
			}
			back := filepath.Join(dir, "back.bin")
			run("-r", back, "-S", "0x08000000:"+strconv.Itoa(len(img)))
			got, _ := os.ReadFile(back)
			if !bytes.Equal(got, img) {
				t.Fatalf("stm32flash -r read back %d bytes that differ from the image", len(got))
			}
		})
	}
}
