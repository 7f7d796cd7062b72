package stm32sim

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/otagw/otagw/downstream/stm32/chips"
)

func TestParseFaults(t *testing.T) {
	f, err := ParseFaults("nack=0.05,corrupt-per-kib=1,drop=0.001,delay=2ms,disconnect-after=4000")
	if err != nil {
		t.Fatal(err)
	}
	want := Faults{NACK: 0.05, CorruptPerKiB: 1, DropPerKiB: 1.024, Delay: 2 * time.Millisecond, DisconnectAfter: 4000}
	if f != want {
		t.Fatalf("ParseFaults = %+v, want %+v", f, want)
	}
	for _, bad := range []string{"nack=2", "foo=1", "nack", "delay=-1s"} {
		if _, err := ParseFaults(bad); err == nil {
			t.Errorf("ParseFaults(%q) accepted", bad)
		}
	}
}

type script struct {
	in  *bytes.Reader
	out bytes.Buffer
}

func (s *script) Read(p []byte) (int, error)  { return s.in.Read(p) }
func (s *script) Write(p []byte) (int, error) { return s.out.Write(p) }

// run feeds a host byte stream to a fresh simulator and returns its replies.
func run(t testing.TB, chip *chips.Chip, in []byte) (*Sim, []byte) {
	sim := New(chip, Options{})
	sc := &script{in: bytes.NewReader(in)}
	if err := sim.Serve(context.Background(), sc); err != nil && err != io.EOF {
		t.Fatalf("Serve: %v", err)
	}
	return sim, sc.out.Bytes()
}

func TestProtocol(t *testing.T) {
	f1, _ := chips.Lookup(0x410)
	// sync, 0x7F again (already synced: NACK after the second byte), Get ID,
	// Erase pages 0-1, Write 4 bytes at 0x08000000, Read them back.
	in := []byte{0x7F, 0x7F, 0x7F, 0x02, 0xFD, 0x43, 0xBC, 0x01, 0x00, 0x01, 0x00,
		0x31, 0xCE, 0x08, 0x00, 0x00, 0x00, 0x08, 0x03, 1, 2, 3, 4, 0x03 ^ 1 ^ 2 ^ 3 ^ 4,
		0x11, 0xEE, 0x08, 0x00, 0x00, 0x00, 0x08, 0x03, 0xFC}
	sim, out := run(t, f1, in)
	want := []byte{ack, nack, ack, 1, 0x04, 0x10, ack, ack, ack, ack, ack, ack, ack, ack, ack, 1, 2, 3, 4}
	if !bytes.Equal(out, want) {
		t.Fatalf("replies % x\nwant    % x", out, want)
	}
	if st := sim.Stats(); st.PagesErased != 2 || !bytes.Equal(sim.Flash()[:4], []byte{1, 2, 3, 4}) {
		t.Fatalf("flash/erase state wrong: %+v", st)
	}
	// writing over programmed flash is refused, erased flash only
	_, out = run(t, f1, append(in[:3:3], 0x31, 0xCE, 0x08, 0x00, 0x00, 0x00, 0x08, 0x03, 1, 2, 3, 4, 0x03^1^2^3^4, 0x31, 0xCE, 0x08, 0x00, 0x00, 0x00, 0x08, 0x03, 1, 2, 3, 4, 0x03^1^2^3^4))
	if !bytes.Equal(out, []byte{ack, nack, ack, ack, ack, ack, ack, nack}) {
		t.Fatalf("double write: replies % x", out)
	}
}

func FuzzSimCommands(f *testing.F) {
	f.Add([]byte{0x7F, 0x00, 0xFF, 0x01, 0xFE, 0x11, 0xEE, 0x08, 0, 0, 0, 8, 0xFF, 0})
	f.Add([]byte{0x7F, 0x44, 0xBB, 0xFF, 0xFF, 0x00, 0x92, 0x6D, 0x7F, 0xA1, 0x5E})
	f.Add([]byte{0x7F, 0x31, 0xCE, 0x20, 0, 0, 0, 0x20, 0, 9, 9})
	f4, _ := chips.Lookup(0x460)
	f.Fuzz(func(t *testing.T, in []byte) {
		sim, _ := run(t, f4, in)
		if n := len(sim.Flash()); n != int(f4.FlashSize()) {
			t.Fatalf("flash size changed to %d", n)
		}
	})
}
