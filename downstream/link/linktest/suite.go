package linktest

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"github.com/otagw/otagw/downstream/link"
)

// Run is the conformance suite every link.Link implementation passes:
// newPair returns the link under test and its peer (what the device side
// reads and writes).
func Run(t *testing.T, newPair func(t *testing.T) (l link.Link, peer io.ReadWriter)) {
	t.Run("RoundTrip", func(t *testing.T) {
		l, peer := newPair(t)
		msg := []byte{0x7F, 0x00, 0xFF, 0x11, 0x13, 0x0A, 0x0D}
		if _, err := l.Write(msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(peer, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("peer read % x, %v; want % x (bytes must pass unchanged)", got, err, msg)
		}
		peer.Write([]byte{0x79, 0x1F})
		l.SetReadDeadline(time.Now().Add(2 * time.Second))
		got = make([]byte, 2)
		if _, err := io.ReadFull(l, got); err != nil || !bytes.Equal(got, []byte{0x79, 0x1F}) {
			t.Fatalf("link read % x, %v", got, err)
		}
	})
	t.Run("Deadline", func(t *testing.T) {
		l, peer := newPair(t)
		l.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if _, err := l.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Read past the deadline = %v; want os.ErrDeadlineExceeded", err)
		}
		peer.Write([]byte{1})
		l.SetReadDeadline(time.Now().Add(2 * time.Second))
		if n, err := l.Read(make([]byte, 1)); n != 1 || err != nil {
			t.Fatalf("Read after a new deadline = %d, %v", n, err)
		}
	})
}
