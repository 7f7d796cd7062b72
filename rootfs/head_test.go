package rootfs

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/otagw/otagw/internal/sign"
	"github.com/otagw/otagw/rootfs/source"
)

// TestCheckHeadSize: a bundle whose source tells its size is refused by
// CheckHead, from its head alone, when it is one byte short or long; file,
// handed-over file and HTTP (Content-Length) sources alike.
func TestCheckHeadSize(t *testing.T) {
	k := newKey(t)
	kr := sign.NewKeyring(k.pub)
	pol := Policy{Compatible: testCompat, Threshold: 1}
	bpath, h := makeBundle(t, makeImage(2, 4*testChunk), bundleSpec{compress: "auto", signers: []testKey{k}})
	good, err := os.ReadFile(bpath)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(good)) != h.Size() {
		t.Fatalf("bundle of %d bytes, head says %d", len(good), h.Size())
	}
	dir := t.TempDir()
	for _, c := range []struct {
		name string
		data []byte
		want error
		kind string
	}{
		{"exact", good, nil, ""},
		{"truncated by one byte", good[:len(good)-1], ErrTruncated, "source-truncated"},
		{"one trailing byte", append(bytes.Clone(good), 0), ErrTrailingData, "trailing-data"},
	} {
		path := writeFile(t, dir, c.name, c.data)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.ServeContent(w, r, "b.otab", time.Time{}, bytes.NewReader(c.data))
		}))
		defer srv.Close()
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		fd, err := source.NewDescriptor(f, path)
		if err != nil {
			t.Fatal(err)
		}
		defer fd.Close()
		for kind, mk := range map[string]func() (source.Source, error){
			"file": func() (source.Source, error) { return source.New(path, source.DefaultOptions()) },
			"http": func() (source.Source, error) { return source.New(srv.URL+"/b.otab", source.DefaultOptions()) },
			"fd":   func() (source.Source, error) { return fd, nil },
		} {
			src, err := mk()
			if err != nil {
				t.Fatal(err)
			}
			got, err := CheckHead(context.Background(), src, kr, pol, time.Now())
			if c.want == nil {
				if err != nil || got.ID() != h.ID() {
					t.Errorf("%s, %s: %v", c.name, kind, err)
				}
				continue
			}
			if !errors.Is(err, c.want) || Kind(err) != c.kind {
				t.Errorf("%s, %s: %v (kind %q), want %v (%s)", c.name, kind, err, Kind(err), c.want, c.kind)
			}
		}
	}
}

// TestCheckHeadRefuses: signatures and policy, as Install checks them.
func TestCheckHeadRefuses(t *testing.T) {
	k, other := newKey(t), newKey(t)
	bpath, _ := makeBundle(t, makeImage(3, 2*testChunk), bundleSpec{signers: []testKey{k}})
	src, _ := source.New(bpath, source.DefaultOptions())
	pol := Policy{Compatible: testCompat, Threshold: 1}
	if _, err := CheckHead(context.Background(), src, sign.NewKeyring(other.pub), pol, time.Now()); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("unknown key: %v", err)
	}
	pol.Compatible = "other-board"
	if _, err := CheckHead(context.Background(), src, sign.NewKeyring(k.pub), pol, time.Now()); !errors.Is(err, ErrIncompatible) {
		t.Errorf("incompatible: %v", err)
	}
	if _, err := CheckHead(context.Background(), src, nil, pol, time.Now()); err == nil {
		t.Error("no keyring accepted")
	}
}

// TestInstallCheckedHead: Install given the head CheckHead returned does not
// parse the manifest again but checks that the source still carries the
// same one: the same bundle installs byte-exact; another bundle behind the
// same source (swapped after the check) is refused before any write.
func TestInstallCheckedHead(t *testing.T) {
	k := newKey(t)
	img := makeImage(41, imgSize)
	bpath, _ := makeBundle(t, img, bundleSpec{signers: []testKey{k}})
	other, _ := makeBundle(t, makeImage(42, imgSize), bundleSpec{signers: []testKey{k}})
	kr := sign.NewKeyring(k.pub)
	pol := Policy{Compatible: testCompat}
	src, err := source.New(bpath, source.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	h, err := CheckHead(context.Background(), src, kr, pol, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	a, b := fileSlot(t, imgSize), fileSlot(t, imgSize)
	res, err := install(t, slotOptions(a, b), Request{Src: src, Head: h, Policy: pol, Booted: "A"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Bundle != h.ID() || !bytes.Equal(readSlot(t, b, imgSize), img) {
		t.Fatalf("result %+v, or the slot does not hold the image", res)
	}

	// The same path now holds another bundle.
	data, err := os.ReadFile(other)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bpath, data, 0o644); err != nil {
		t.Fatal(err)
	}
	b2 := fileSlot(t, imgSize)
	_, err = install(t, slotOptions(a, b2), Request{Src: src, Head: h, Policy: pol, Booted: "A"})
	if !errors.Is(err, source.ErrChanged) {
		t.Fatalf("install of a swapped bundle with the checked head: %v, want ErrChanged", err)
	}
	if !bytes.Equal(readSlot(t, b2, imgSize), bytes.Repeat([]byte{patternByte}, imgSize)) {
		t.Fatal("the slot was written")
	}
}
