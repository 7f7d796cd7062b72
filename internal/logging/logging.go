// Package logging builds otagw's zap logger. Under systemd, when stderr is
// the journal (JOURNAL_STREAM) and the journal's socket takes datagrams,
// entries go to journald with its native protocol, every zap field its own
// journal field (event -> OTAGW_EVENT, see JournalField), so that
//
//	journalctl OTAGW_EVENT=committed
//
// finds them. Otherwise under systemd (or with format "journal") lines go
// to stderr with no timestamp and a syslog priority prefix such as "<3>",
// so journald keeps the level; elsewhere they are human-readable console
// lines or JSON.
//
//	log, level, err := logging.New(logging.Auto, "info", os.Stderr)
//	level.SetLevel(zap.DebugLevel) // on config reload
package logging

import (
	"fmt"
	"io"
	"os"

	"go.uber.org/zap"
	"go.uber.org/zap/buffer"
	"go.uber.org/zap/zapcore"
)

// Formats.
const (
	Auto    = ""        // journal under systemd, console otherwise
	Console = "console" // human-readable with timestamps
	JSON    = "json"    // one JSON object per line
	Journal = "journal" // no timestamps, <N> priority prefixes
	Native  = "native"  // journald's native protocol, fields as journal fields; "journal" lines if refused
)

// New returns a logger writing to w and the level that controls it.
func New(format, level string, w io.Writer) (*zap.Logger, zap.AtomicLevel, error) {
	lvl := zap.NewAtomicLevel()
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, lvl, fmt.Errorf("log level %q: %w", level, err)
	}
	if format == Auto {
		format = Console
		if UnderJournal() {
			format = Native
		} else if os.Getenv("JOURNAL_STREAM") != "" {
			format = Journal
		}
	}
	ec := zapcore.EncoderConfig{
		TimeKey: "ts", LevelKey: "level", NameKey: "logger", MessageKey: "msg",
		StacktraceKey: "stacktrace", LineEnding: "\n",
		EncodeLevel: zapcore.LowercaseLevelEncoder, EncodeTime: zapcore.ISO8601TimeEncoder,
		EncodeDuration: zapcore.StringDurationEncoder, EncodeName: zapcore.FullNameEncoder,
	}
	var enc zapcore.Encoder
	switch format {
	case JSON:
		enc = zapcore.NewJSONEncoder(ec)
	case Console:
		ec.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(ec)
	case Journal, Native:
		ec.TimeKey = ""
		ec.LevelKey = ""
		enc = journalEncoder{zapcore.NewConsoleEncoder(ec)}
	default:
		return nil, lvl, fmt.Errorf("log format %q: want console, json, journal or native", format)
	}
	core := zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), lvl)
	if format == Native {
		jc, err := NewJournalCore(JournalSocket, "otagw", lvl, core)
		if err != nil {
			return nil, lvl, err
		}
		core = jc
	}
	return zap.New(core), lvl, nil
}

// journalEncoder prefixes each line with its syslog priority.
type journalEncoder struct{ zapcore.Encoder }

func (j journalEncoder) Clone() zapcore.Encoder { return journalEncoder{j.Encoder.Clone()} }

func (j journalEncoder) EncodeEntry(ent zapcore.Entry, fields []zapcore.Field) (*buffer.Buffer, error) {
	inner, err := j.Encoder.EncodeEntry(ent, fields)
	if err != nil {
		return nil, err
	}
	out := buffer.NewPool().Get()
	out.AppendString(Priority(ent.Level))
	out.Write(inner.Bytes())
	inner.Free()
	return out, nil
}

// Priority is the sd-daemon(3) prefix for a zap level.
func Priority(l zapcore.Level) string {
	switch {
	case l >= zapcore.DPanicLevel:
		return "<2>" // crit
	case l >= zapcore.ErrorLevel:
		return "<3>" // err
	case l >= zapcore.WarnLevel:
		return "<4>" // warning
	case l >= zapcore.InfoLevel:
		return "<6>" // info
	}
	return "<7>" // debug
}

// Err is zap.Error, re-exported so command files need not import zap.
func Err(err error) zap.Field { return zap.Error(err) }
