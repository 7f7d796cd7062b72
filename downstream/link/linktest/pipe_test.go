package linktest

import (
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"github.com/otagw/otagw/downstream/link"
)

func TestPipe(t *testing.T) {
	a, b := Pipe()
	if _, err := a.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 3)
	n, err := b.Read(buf)
	if err != nil || string(buf[:n]) != "hel" {
		t.Fatalf("Read = %q, %v; want \"hel\"", buf[:n], err)
	}
	n, _ = b.Read(buf)
	if string(buf[:n]) != "lo" {
		t.Fatalf("second Read = %q; want \"lo\"", buf[:n])
	}
	b.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := b.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past deadline = %v; want ErrDeadlineExceeded", err)
	}
	b.SetReadDeadline(time.Time{})
	go func() { time.Sleep(10 * time.Millisecond); a.Write([]byte{1}) }()
	if n, err := b.Read(buf); n != 1 || err != nil {
		t.Fatalf("blocking Read = %d, %v", n, err)
	}
	a.Close()
	if _, err := b.Read(buf); err != io.EOF {
		t.Fatalf("Read after Close = %v; want EOF", err)
	}
}

func TestSuite(t *testing.T) {
	Run(t, func(t *testing.T) (link.Link, io.ReadWriter) {
		a, b := Pipe()
		t.Cleanup(func() { a.Close() })
		return a, b
	})
}
