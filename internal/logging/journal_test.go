package logging

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"
)

// fakeJournal is a unix datagram socket standing in for
// /run/systemd/journal/socket.
type fakeJournal struct {
	path string
	conn *net.UnixConn
}

func newFakeJournal(t *testing.T) *fakeJournal {
	t.Helper()
	path := filepath.Join(t.TempDir(), "socket")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &fakeJournal{path: path, conn: conn}
}

// next returns the next entry's bytes: the datagram, or the content of
// the memfd passed with an empty one.
func (j *fakeJournal) next(t *testing.T) []byte {
	t.Helper()
	j.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf, oob := make([]byte, 1<<20), make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := j.conn.ReadMsgUnix(buf, oob)
	if err != nil {
		t.Fatalf("fake journal: %v", err)
	}
	if oobn == 0 {
		return buf[:n]
	}
	if n != 0 {
		t.Fatalf("a datagram with both data (%d bytes) and a descriptor", n)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		t.Fatalf("control message: %v", err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		t.Fatalf("passed descriptors: %v %v", fds, err)
	}
	seals, err := unix.FcntlInt(uintptr(fds[0]), unix.F_GET_SEALS, 0)
	if err != nil || seals&(unix.F_SEAL_WRITE|unix.F_SEAL_SHRINK|unix.F_SEAL_GROW) != unix.F_SEAL_WRITE|unix.F_SEAL_SHRINK|unix.F_SEAL_GROW {
		t.Errorf("the passed memfd is not sealed (seals %#x, %v): journald refuses it", seals, err)
	}
	f := os.NewFile(uintptr(fds[0]), "memfd")
	defer f.Close()
	// journald reads it from the start (the offset is the sender's)
	b, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<30))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func journalLogger(t *testing.T, j *fakeJournal) (*zap.Logger, *bytes.Buffer) {
	t.Helper()
	var fb bytes.Buffer
	fallback := zapcore.NewCore(journalEncoder{zapcore.NewConsoleEncoder(zapcore.EncoderConfig{MessageKey: "msg", LineEnding: "\n"})},
		zapcore.AddSync(&fb), zapcore.DebugLevel)
	core, err := NewJournalCore(j.path, "otagw", zapcore.DebugLevel, fallback)
	if err != nil {
		t.Fatal(err)
	}
	return zap.New(core), &fb
}

func TestJournalNativeFields(t *testing.T) {
	j := newFakeJournal(t)
	log, fb := journalLogger(t, j)

	log.Named("flow").With(zap.String("release", "1.4.0")).Info("entered committed",
		zap.String("event", "committed"), zap.String("state", "committed"), zap.String("slot", "B"),
		zap.String("device", "pump"), zap.String("kind", "verify-failed"), zap.Int("attempt", 2),
		zap.Duration("took", 1500*time.Millisecond), zap.Bool("now", true), zap.String("bus-name", "can0"))
	want := "MESSAGE=entered committed\n" +
		"PRIORITY=6\n" +
		"SYSLOG_IDENTIFIER=otagw\n" +
		"OTAGW_LOGGER=flow\n" +
		"OTAGW_RELEASE=1.4.0\n" +
		"OTAGW_EVENT=committed\n" +
		"OTAGW_STATE=committed\n" +
		"OTAGW_SLOT=B\n" +
		"OTAGW_DEVICE=pump\n" +
		"OTAGW_KIND=verify-failed\n" +
		"OTAGW_ATTEMPT=2\n" +
		"OTAGW_TOOK=1.5s\n" +
		"OTAGW_NOW=true\n" +
		"OTAGW_BUS_NAME=can0\n"
	if got := string(j.next(t)); got != want {
		t.Errorf("datagram:\n%s\nwant:\n%s", got, want)
	}

	// a value with a newline takes the binary-safe form
	log.Error("install failed:\nslot B", zap.Error(errors.New("hash mismatch\nat chunk 3")))
	var w bytes.Buffer
	le := func(n int) { binary.Write(&w, binary.LittleEndian, uint64(n)) }
	w.WriteString("MESSAGE\n")
	le(len("install failed:\nslot B"))
	w.WriteString("install failed:\nslot B\n")
	w.WriteString("PRIORITY=3\nSYSLOG_IDENTIFIER=otagw\n")
	w.WriteString("OTAGW_ERROR\n")
	le(len("hash mismatch\nat chunk 3"))
	w.WriteString("hash mismatch\nat chunk 3\n")
	if got := j.next(t); !bytes.Equal(got, w.Bytes()) {
		t.Errorf("multi-line datagram:\n%q\nwant:\n%q", got, w.Bytes())
	}

	// an entry larger than a datagram travels as a sealed memfd
	big := strings.Repeat("0123456789abcdef", 40<<10) // 640 KiB
	log.Warn("big", zap.String("report", big))
	want = "MESSAGE=big\nPRIORITY=4\nSYSLOG_IDENTIFIER=otagw\nOTAGW_REPORT=" + big + "\n"
	if got := j.next(t); string(got) != want {
		t.Errorf("large entry: %d bytes, want %d; starts %.80q", len(got), len(want), got)
	}
	if fb.Len() != 0 {
		t.Errorf("the fallback got entries the journal took: %q", fb.String())
	}
}

func TestJournalFallback(t *testing.T) {
	j := newFakeJournal(t)
	log, fb := journalLogger(t, j)
	j.conn.Close()
	os.Remove(j.path) // journald is gone
	log.Info("still logged", zap.String("event", "idle"))
	if got := fb.String(); got != "<6>still logged\t{\"event\": \"idle\"}\n" {
		t.Errorf("fallback: %q", got)
	}
}

func TestJournalFieldNames(t *testing.T) {
	for k, want := range map[string]string{
		"event": "OTAGW_EVENT", "release": "OTAGW_RELEASE", "kind": "OTAGW_KIND",
		"error": "OTAGW_ERROR", "mcu.bus": "OTAGW_MCU_BUS", "chunk_size": "OTAGW_CHUNK_SIZE",
		strings.Repeat("x", 80): "OTAGW_" + strings.Repeat("X", 58),
	} {
		if got := JournalField(k); got != want {
			t.Errorf("%q -> %q, want %q", k, got, want)
		}
	}
}
