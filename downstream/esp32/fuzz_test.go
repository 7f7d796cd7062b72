package esp32_test

import (
	"bytes"
	"testing"

	"github.com/otagw/otagw/downstream/esp32"
)

// FuzzSLIP: whatever the line carries, the decoder never panics, frames
// stay bounded, and an encoded frame survives any noise before it.
func FuzzSLIP(f *testing.F) {
	f.Add([]byte{0xC0, 0x01, 0x08, 0x00, 0x00, 0xC0}, []byte("boot:0x13"))
	f.Add([]byte{0xDB, 0xDC, 0xC0, 0xDB, 0xC0}, []byte{0xC0, 0xC0})
	f.Fuzz(func(t *testing.T, payload, noise []byte) {
		var d esp32.Decoder
		d.Write(noise)
		for {
			fr, ok := d.Next()
			if !ok {
				break
			}
			if len(fr) > esp32.MaxFrame {
				t.Fatalf("frame of %d bytes", len(fr))
			}
		}
		if len(payload) == 0 || len(payload) > esp32.MaxFrame {
			return
		}
		d.Reset()
		d.Write(append([]byte{0xC0}, esp32.SLIPEncode(payload)...)) // a frame boundary after the noise
		fr, ok := d.Next()
		if !ok || !bytes.Equal(fr, payload) {
			t.Fatalf("round trip of %x = %x, %v", payload, fr, ok)
		}
	})
}

// FuzzResponse: the parser and the status reader accept or refuse, never panic.
func FuzzResponse(f *testing.F) {
	f.Add([]byte{0x01, 0x0a, 0x04, 0x00, 0x83, 0x1d, 0xf0, 0x00, 0, 0, 0, 0}, 0)
	f.Add([]byte{0x01, 0x13, 0x24, 0x00, 0, 0, 0, 0}, 32)
	f.Fuzz(func(t *testing.T, p []byte, n int) {
		r, err := esp32.ParseResponse(p)
		if err != nil {
			return
		}
		if len(r.Encode()) != len(p) {
			t.Fatalf("re-encoded %d bytes, parsed %d", len(r.Encode()), len(p))
		}
		r.Status(n)
		if req, err := esp32.ParseRequest(p); err == nil {
			_ = req.Encode()
		}
	})
}

// FuzzImage: the image and app-descriptor reader never panics and finds
// the version BuildImage wrote.
func FuzzImage(f *testing.F) {
	chip, _ := esp32.LookupChip("esp32s3")
	f.Add(esp32.BuildImage(chip, "1.2.3", []byte("body")))
	f.Add([]byte{0xE9, 1, 2, 0x20})
	f.Fuzz(func(t *testing.T, p []byte) {
		esp32.ParseImage(p)
		if len(p) > 31 || bytes.IndexByte(p, 0) >= 0 {
			return
		}
		v := string(p)
		info, err := esp32.ParseImage(esp32.BuildImage(chip, v, nil))
		if err != nil || info.App == nil || info.App.Version != v || info.ChipID != chip.ID {
			t.Fatalf("BuildImage(%q) read back as %+v, %v", v, info.App, err)
		}
	})
}
