package reset

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// SimLines drives the simulated BOOT0/NRST lines of part Part of a
// simulator process over its Unix socket ("sim:SOCKET:PART"). It exists
// for end-to-end tests and the demo only, where the daemon is its own
// process on a machine without GPIOs and several simulated parts share one
// CAN bus, so that each device still has its own reset lines; a gateway
// uses gpio:CHIP:BOOT0LINE:NRSTLINE.
//
// The protocol is one line each way: "boot N" (BOOT0 high, pulse NRST: the
// part's ROM bootloader) or "app N" (BOOT0 low, pulse NRST: its
// application), answered by "ok" or an error text.
type SimLines struct {
	Socket string
	Part   int
}

// ParseSimLines splits "sim:SOCKET:PART".
func ParseSimLines(spec string) (SimLines, error) {
	rest, ok := strings.CutPrefix(spec, "sim:")
	i := strings.LastIndexByte(rest, ':')
	if !ok || i <= 0 {
		return SimLines{}, fmt.Errorf("reset %q: want sim:SOCKET:PART", spec)
	}
	n, err := strconv.Atoi(rest[i+1:])
	if err != nil || n < 0 {
		return SimLines{}, fmt.Errorf("reset %q: part %q is not a number", spec, rest[i+1:])
	}
	return SimLines{Socket: rest[:i], Part: n}, nil
}

func (s SimLines) do(ctx context.Context, verb string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", s.Socket)
	if err != nil {
		return fmt.Errorf("reset sim:%s:%d: %w", s.Socket, s.Part, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "%s %d\n", verb, s.Part); err != nil {
		return fmt.Errorf("reset sim:%s:%d: %w", s.Socket, s.Part, err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("reset sim:%s:%d: %w", s.Socket, s.Part, err)
	}
	if line = strings.TrimSpace(line); line != "ok" {
		return fmt.Errorf("reset sim:%s:%d: %s", s.Socket, s.Part, line)
	}
	return nil
}

// EnterBootloader resets the part with BOOT0 high.
func (s SimLines) EnterBootloader(ctx context.Context) error { return s.do(ctx, "boot") }

// Run resets the part with BOOT0 low.
func (s SimLines) Run(ctx context.Context) error { return s.do(ctx, "app") }
