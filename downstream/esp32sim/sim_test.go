package esp32sim_test

import (
	"context"
	"testing"
	"time"

	"github.com/otagw/otagw/downstream/esp32"
	"github.com/otagw/otagw/downstream/esp32sim"
	"github.com/otagw/otagw/downstream/link/linktest"
)

// exchange sends one request and collects the frames that come back within d.
func exchange(t *testing.T, host *linktest.End, r esp32.Request, d time.Duration) [][]byte {
	t.Helper()
	host.Write(esp32.SLIPEncode(r.Encode()))
	var dec esp32.Decoder
	buf := make([]byte, 4096)
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		host.SetReadDeadline(deadline)
		n, _ := host.Read(buf)
		dec.Write(buf[:n])
	}
	var out [][]byte
	for {
		f, ok := dec.Next()
		if !ok {
			return out
		}
		out = append(out, f)
	}
}

func words(w ...uint32) []byte {
	p := make([]byte, 0, 4*len(w))
	for _, v := range w {
		p = append(p, byte(v), byte(v>>8), byte(v>>16), byte(v>>24))
	}
	return p
}

// TestROMBehaviour: what the real ROM does and what esptool relies on.
func TestROMBehaviour(t *testing.T) {
	chip, _ := esp32.LookupChip("esp32")
	sim := esp32sim.New(chip, esp32sim.Options{})
	host, dev := linktest.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go sim.Serve(ctx, dev)
	defer host.Close()
	wait := 50 * time.Millisecond

	if got := exchange(t, host, esp32.Request{Op: esp32.OpReadReg, Data: words(esp32.MagicRegister)}, wait); len(got) != 0 {
		t.Fatalf("answered %d frames before SYNC; the ROM is still autobauding", len(got))
	}
	sync := exchange(t, host, esp32.Request{Op: esp32.OpSync, Data: esp32.SyncPayload}, wait)
	if len(sync) != 8 {
		t.Fatalf("SYNC answered %d times; the ROM answers 8", len(sync))
	}
	if r, _ := esp32.ParseResponse(sync[0]); r.Value == 0 || len(r.Data) != 4 {
		t.Fatalf("ROM SYNC answer %+v: want a non-zero value and 4 status bytes", r)
	}
	// GET_SECURITY_INFO on the ESP32: an unknown command, answered with another opcode
	un := exchange(t, host, esp32.Request{Op: esp32.OpGetSecurityInfo}, wait)
	if len(un) != 1 || len(esp32.SLIPEncode(un[0])) != 14 {
		t.Fatalf("unsupported-op answer: %x", un)
	}
	if r, _ := esp32.ParseResponse(un[0]); r.Op == esp32.OpGetSecurityInfo || r.Data[0] != 1 || r.Data[1] != esp32.ErrCodeInvalid {
		t.Fatalf("unsupported-op answer %+v", r)
	}
	// flash commands before SPI_ATTACH are refused
	fb := exchange(t, host, esp32.Request{Op: esp32.OpFlashBegin, Data: words(0x1000, 4, 0x400, 0x10000)}, wait)
	if r, _ := esp32.ParseResponse(fb[0]); r.Data[0] != 1 {
		t.Fatalf("FLASH_BEGIN before SPI_ATTACH accepted: %+v", r)
	}
	exchange(t, host, esp32.Request{Op: esp32.OpSPIAttach, Data: words(0, 0)}, wait)
	fb = exchange(t, host, esp32.Request{Op: esp32.OpFlashBegin, Data: words(0x400, 1, 0x400, 0x10000)}, wait)
	if r, _ := esp32.ParseResponse(fb[0]); r.Data[0] != 0 {
		t.Fatalf("FLASH_BEGIN refused: %+v", r)
	}
	// a bad checksum is refused with 0x07 and nothing is written
	blk := make([]byte, 0x400)
	for i := range blk {
		blk[i] = 0x0F
	}
	bad := exchange(t, host, esp32.Request{Op: esp32.OpFlashData, Checksum: esp32.Checksum(blk) ^ 1, Data: append(words(0x400, 0, 0, 0), blk...)}, wait)
	if r, _ := esp32.ParseResponse(bad[0]); r.Data[0] != 1 || r.Data[1] != esp32.ErrCodeChecksum {
		t.Fatalf("bad checksum: %+v", r)
	}
	ok := exchange(t, host, esp32.Request{Op: esp32.OpFlashData, Checksum: esp32.Checksum(blk), Data: append(words(0x400, 0, 0, 0), blk...)}, wait)
	if r, _ := esp32.ParseResponse(ok[0]); r.Data[0] != 0 {
		t.Fatalf("good block refused: %+v", r)
	}
	if fl := sim.Flash(); fl[0x10000] != 0x0F || fl[0x10400] != 0xFF {
		t.Fatalf("flash after one block: %x %x", fl[0x10000], fl[0x10400])
	}
}
