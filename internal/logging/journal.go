package logging

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"
)

// JournalSocket is where journald takes native-protocol datagrams.
const JournalSocket = "/run/systemd/journal/socket"

// Journal fields for the zap fields the daemon logs its update flow with,
// so that e.g. `journalctl OTAGW_EVENT=committed` finds the commit. Any
// other zap field NAME becomes OTAGW_NAME (upper-case, characters outside
// A-Z, 0-9 and _ replaced by _).
var journalNames = map[string]string{
	"event":   "OTAGW_EVENT",
	"state":   "OTAGW_STATE",
	"release": "OTAGW_RELEASE",
	"slot":    "OTAGW_SLOT",
	"device":  "OTAGW_DEVICE",
	"kind":    "OTAGW_KIND",
}

// JournalField is the journal field name a zap field is written as.
func JournalField(zapKey string) string {
	if n, ok := journalNames[zapKey]; ok {
		return n
	}
	b := []byte("OTAGW_" + strings.ToUpper(zapKey))
	for i, c := range b {
		if (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '_' {
			b[i] = '_'
		}
	}
	if len(b) > 64 { // journald's limit on field names
		b = b[:64]
	}
	return string(b)
}

// UnderJournal reports whether the process runs as a systemd service
// whose stderr goes to the journal (JOURNAL_STREAM names stderr, see
// systemd.exec(5)) and the journal's native socket takes datagrams.
func UnderJournal() bool {
	if ok, err := journal.StderrIsJournalStream(); err != nil || !ok {
		return false
	}
	c, err := net.Dial("unixgram", JournalSocket)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// journalCore is a zap core that writes each entry to journald with its
// native protocol (https://systemd.io/JOURNAL_NATIVE_PROTOCOL/): MESSAGE,
// PRIORITY, SYSLOG_IDENTIFIER, OTAGW_LOGGER and every zap field as its own
// journal field. An entry the journal does not take goes to fallback.
type journalCore struct {
	zapcore.LevelEnabler
	conn     *net.UnixConn
	addr     *net.UnixAddr
	ident    string
	fields   []zapcore.Field // from With
	fallback zapcore.Core
}

// NewJournalCore returns a core writing to the journal socket at path
// (JournalSocket in production) as ident (SYSLOG_IDENTIFIER). fallback,
// if not nil, gets the entries the socket refuses.
func NewJournalCore(path, ident string, enab zapcore.LevelEnabler, fallback zapcore.Core) (zapcore.Core, error) {
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Net: "unixgram"}) // autobind
	if err != nil {
		return nil, fmt.Errorf("journal socket %s: %w", path, err)
	}
	return &journalCore{LevelEnabler: enab, conn: conn, addr: &net.UnixAddr{Name: path, Net: "unixgram"}, ident: ident, fallback: fallback}, nil
}

func (c *journalCore) With(fields []zapcore.Field) zapcore.Core {
	clone := *c
	clone.fields = append(append([]zapcore.Field(nil), c.fields...), fields...)
	if c.fallback != nil {
		clone.fallback = c.fallback.With(fields)
	}
	return &clone
}

func (c *journalCore) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(ent.Level) {
		return ce.AddCore(ent, c)
	}
	return ce
}

// Sync flushes the fallback; journald's datagrams need no flushing.
func (c *journalCore) Sync() error {
	if c.fallback != nil {
		return c.fallback.Sync()
	}
	return nil
}

func (c *journalCore) Write(ent zapcore.Entry, fields []zapcore.Field) error {
	msg := c.encode(ent, fields)
	err := c.send(msg)
	if err != nil && c.fallback != nil {
		return c.fallback.Write(ent, fields)
	}
	if err != nil {
		return fmt.Errorf("journal socket %s: %w", c.addr.Name, err)
	}
	return nil
}

// encode builds one native-protocol message.
func (c *journalCore) encode(ent zapcore.Entry, fields []zapcore.Field) []byte {
	var b bytes.Buffer
	appendJournalField(&b, "MESSAGE", ent.Message)
	appendJournalField(&b, "PRIORITY", strconv.Itoa(journalPriority(ent.Level)))
	if c.ident != "" {
		appendJournalField(&b, "SYSLOG_IDENTIFIER", c.ident)
	}
	if ent.LoggerName != "" {
		appendJournalField(&b, "OTAGW_LOGGER", ent.LoggerName)
	}
	for _, fs := range [][]zapcore.Field{c.fields, fields} {
		for _, f := range fs {
			enc := zapcore.NewMapObjectEncoder()
			f.AddTo(enc)
			// one key per field, except a zap.Error with a verbose form
			for _, k := range slices.Sorted(maps.Keys(enc.Fields)) {
				appendJournalField(&b, JournalField(k), journalValue(enc.Fields[k]))
			}
		}
	}
	if ent.Stack != "" {
		appendJournalField(&b, "OTAGW_STACKTRACE", ent.Stack)
	}
	return b.Bytes()
}

// appendJournalField writes NAME=value\n, or for a value with a newline
// the binary-safe form: NAME\n, the length as 64-bit little endian, the
// value, \n.
func appendJournalField(b *bytes.Buffer, name, value string) {
	if !strings.Contains(value, "\n") {
		b.WriteString(name)
		b.WriteByte('=')
		b.WriteString(value)
		b.WriteByte('\n')
		return
	}
	b.WriteString(name)
	b.WriteByte('\n')
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(value)))
	b.Write(n[:])
	b.WriteString(value)
	b.WriteByte('\n')
}

// journalValue is the text of a zap field value.
func journalValue(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case []byte:
		return string(x)
	case bool:
		return strconv.FormatBool(x)
	case time.Duration:
		return x.String()
	case time.Time:
		return x.Format(time.RFC3339Nano)
	case float64:
		if math.IsInf(x, 0) || math.IsNaN(x) {
			return fmt.Sprint(x)
		}
		return strconv.FormatFloat(x, 'g', -1, 64)
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, uintptr, float32, complex64, complex128:
		return fmt.Sprint(x)
	case fmt.Stringer:
		return x.String()
	case error:
		return x.Error()
	}
	if b, err := json.Marshal(v); err == nil {
		return string(b)
	}
	return fmt.Sprint(v)
}

// journalPriority is the syslog priority of a zap level.
func journalPriority(l zapcore.Level) int {
	switch {
	case l >= zapcore.DPanicLevel:
		return 2 // crit
	case l >= zapcore.ErrorLevel:
		return 3 // err
	case l >= zapcore.WarnLevel:
		return 4 // warning
	case l >= zapcore.InfoLevel:
		return 6 // info
	}
	return 7 // debug
}

// send writes one datagram; one too large for a datagram travels as a
// sealed memfd passed with SCM_RIGHTS, as the protocol allows.
func (c *journalCore) send(msg []byte) error {
	_, _, err := c.conn.WriteMsgUnix(msg, nil, c.addr)
	if err == nil || !(errors.Is(err, syscall.EMSGSIZE) || errors.Is(err, syscall.ENOBUFS)) {
		return err
	}
	fd, err := unix.MemfdCreate("otagw-journal", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return fmt.Errorf("memfd for a large journal entry: %w", err)
	}
	f := os.NewFile(uintptr(fd), "otagw-journal")
	defer f.Close()
	if _, err := f.Write(msg); err != nil {
		return fmt.Errorf("memfd for a large journal entry: %w", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_WRITE|unix.F_SEAL_SEAL); err != nil {
		return fmt.Errorf("seal the memfd of a large journal entry: %w", err)
	}
	_, _, err = c.conn.WriteMsgUnix(nil, unix.UnixRights(fd), c.addr)
	return err
}
