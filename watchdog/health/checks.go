package health

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"
)

func (c *Checker) checkUnit(ctx context.Context, ch Check) (string, error) {
	if c.Units == nil {
		return "", fmt.Errorf("unit %s: %w: no service manager configured", ch.Unit, ErrCheckFailed)
	}
	state, err := c.Units.ActiveState(ctx, ch.Unit)
	if err != nil {
		return "", err
	}
	if state != "active" {
		return state, fmt.Errorf("unit %s is %s, not active: %w", ch.Unit, state, ErrCheckFailed)
	}
	return state, nil
}

// tail keeps the last bytes of a command's output for the report.
type tail struct{ b []byte }

func (t *tail) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 512 {
		t.b = t.b[len(t.b)-512:]
	}
	return len(p), nil
}

func (c *Checker) checkCommand(ctx context.Context, ch Check) (string, error) {
	want := ch.ExitCodes
	if len(want) == 0 {
		want = []int{0}
	}
	var out tail
	cmd := exec.CommandContext(ctx, ch.Command[0], ch.Command[1:]...)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = time.Second // a grandchild holding the pipe must not hold the check
	err := cmd.Run()
	code := -1
	var ee *exec.ExitError
	switch {
	case err == nil:
		code = 0
	case errors.As(err, &ee) && ee.Exited():
		code = ee.ExitCode()
	case ctx.Err() != nil:
		return "", fmt.Errorf("command %s: killed: %w", ch.Command[0], ctx.Err())
	default:
		return "", fmt.Errorf("command %s: %w", ch.Command[0], err)
	}
	detail := "exit " + strconv.Itoa(code)
	if slices.Contains(want, code) {
		return detail, nil
	}
	msg := strings.TrimSpace(string(bytes.ToValidUTF8(out.b, []byte("?"))))
	if msg != "" {
		msg = ": " + msg
	}
	return detail, fmt.Errorf("command %s exited %d, want one of %v%s: %w", ch.Command[0], code, want, msg, ErrCheckFailed)
}

func (c *Checker) checkTCP(ctx context.Context, ch Check) (string, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", ch.TCP)
	if err != nil {
		return "", fmt.Errorf("tcp %s: %w", ch.TCP, err)
	}
	conn.Close()
	return "connected", nil
}

func (c *Checker) checkHTTP(ctx context.Context, ch Check) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ch.HTTP, nil)
	if err != nil {
		return "", fmt.Errorf("http %s: %w", ch.HTTP, err)
	}
	client := c.HTTP
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("http GET: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	detail := "HTTP " + strconv.Itoa(resp.StatusCode)
	ok := resp.StatusCode >= 200 && resp.StatusCode < 300
	if len(ch.Status) > 0 {
		ok = slices.Contains(ch.Status, resp.StatusCode)
	}
	if !ok {
		want := "2xx"
		if len(ch.Status) > 0 {
			want = fmt.Sprint(ch.Status)
		}
		return detail, fmt.Errorf("http GET %s answered %d, want %s: %w", ch.HTTP, resp.StatusCode, want, ErrCheckFailed)
	}
	return detail, nil
}

func (c *Checker) checkFile(ch Check) (string, error) {
	fi, err := os.Stat(ch.File)
	if err != nil {
		return "", fmt.Errorf("file: %w", err)
	}
	return fi.Mode().Type().String(), nil
}

func (c *Checker) checkUptime(ch Check) (string, error) {
	path := c.UptimePath
	if path == "" {
		path = "/proc/uptime"
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("uptime: %w", err)
	}
	up, err := ParseUptime(raw)
	if err != nil {
		return "", fmt.Errorf("uptime: %s: %w", path, err)
	}
	detail := "up " + up.Round(time.Second).String()
	if up < ch.Uptime {
		return detail, fmt.Errorf("up %v, less than %v: %w", up.Round(time.Second), ch.Uptime, ErrCheckFailed)
	}
	return detail, nil
}

// ParseUptime reads the first field of /proc/uptime ("1215.86 2200.16").
func ParseUptime(b []byte) (time.Duration, error) {
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return 0, errors.New("empty")
	}
	intPart, fracPart, _ := strings.Cut(fields[0], ".")
	s, err := strconv.ParseUint(intPart, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("seconds %q: %w", fields[0], err)
	}
	var frac time.Duration
	if fracPart != "" {
		if len(fracPart) > 9 {
			fracPart = fracPart[:9]
		}
		f, err := strconv.ParseUint(fracPart, 10, 32)
		if err != nil {
			return 0, fmt.Errorf("fraction %q: %w", fields[0], err)
		}
		for i := len(fracPart); i < 9; i++ {
			f *= 10
		}
		frac = time.Duration(f)
	}
	return time.Duration(s)*time.Second + frac, nil
}
