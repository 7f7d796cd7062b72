package fanout_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/otagw/otagw/downstream"
	"github.com/otagw/otagw/downstream/fanout"
	"github.com/otagw/otagw/downstream/stm32"
	"github.com/otagw/otagw/downstream/stm32/chips"
	"github.com/otagw/otagw/downstream/stm32sim"
)

// TestProtection: a read-protected part is refused unless readout_unprotect
// is on (then it is mass-erased by the bootloader and flashed); a
// write-protected part is flashed after Write Unprotect.
func TestProtection(t *testing.T) {
	s, kr := keys(t)
	pkg, img := makePkg(t, s, kr, 0x413, "F4", "1.0.0", 6000)
	chip, _ := chips.Lookup(0x413)
	for _, tc := range []struct {
		name       string
		sim        stm32sim.Options
		wunp, runp bool
		want       fanout.State
		wantErr    error
	}{
		{"rdp-refused", stm32sim.Options{ReadProtected: true}, false, false, fanout.Failed, stm32.ErrProtected},
		{"rdp-unprotected", stm32sim.Options{ReadProtected: true}, false, true, fanout.Success, nil},
		{"wrp-unprotected", stm32sim.Options{WriteProtected: true}, true, false, fanout.Success, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hw := newSimHW(t)
			sim := hw.add("d", chip, tc.sim)
			o := fastOptions()
			o.STM32.WriteUnprotect, o.STM32.ReadoutUnprotect = tc.wunp, tc.runp
			o.Buses = []downstream.Bus{{Name: "a", Protocol: "stm32-uart", Port: "/dev/null"}}
			o.Devices = []downstream.Device{{Name: "d", Bus: "a", Family: "F4", ProductID: 0x413}}
			eng, err := fanout.New(o, fanout.NewMemStore(), nil, fanout.WithHardware(hw), fanout.WithClock(time.Now, noSleep))
			if err != nil {
				t.Fatal(err)
			}
			res, _ := eng.Run(context.Background(), pkg, nil, nil)
			r := res[0]
			if r.State != tc.want || (tc.wantErr != nil && !errors.Is(r.Err, tc.wantErr)) {
				t.Fatalf("%s (%v); want %s %v", r.State, r.Err, tc.want, tc.wantErr)
			}
			rdp, wrp := sim.Protection()
			if r.State == fanout.Success && (rdp || wrp || !bytes.Equal(sim.Flash()[:len(img)], img)) {
				t.Fatalf("success but rdp=%v wrp=%v or flash differs", rdp, wrp)
			}
		})
	}
}
