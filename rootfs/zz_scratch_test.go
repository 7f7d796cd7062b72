package rootfs

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/otagw/otagw/internal/sign"
)

func TestZZScratch(t *testing.T) {
	b := os.Getenv("ZZ_BUNDLE")
	if b == "" {
		t.Skip()
	}
	kr, _ := sign.LoadKeyring(os.Getenv("ZZ_RING"))
	for _, ck := range []string{"16", "1024", "16", "1024", "64", "64"} {
		n, _ := strconv.Atoi(ck)
		o := DefaultOptions()
		o.CheckpointBytes = int64(n) << 20
		o.Slots = []SlotConfig{{Name: "t", Class: "rootfs", Device: os.Getenv("ZZ_DEV"), Bootname: "t"}}
		inst, _ := NewInstaller(o, nil)
		st := time.Now()
		_, err := inst.Install(context.Background(), Request{Source: b, Keyring: kr, Policy: Policy{Compatible: "b"}})
		t.Logf("ckpt %s MiB: %v %v", ck, time.Since(st), err)
	}
}
