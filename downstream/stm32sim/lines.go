package stm32sim

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
)

// ServeResetLines serves the BOOT0/NRST lines of sims on a Unix socket,
// for reset strategy "sim:SOCKET:PART" (reset.SimLines): "boot N" resets
// part N into its ROM bootloader, "app N" into its application. Tests and
// the demo use it where the daemon is its own process on a machine without
// GPIOs; several parts on one CAN bus then still have their own lines.
func ServeResetLines(ctx context.Context, path string, sims ...*Sim) (net.Listener, error) {
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("reset lines %s: %w", path, err)
	}
	context.AfterFunc(ctx, func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil {
					return
				}
				fmt.Fprintln(c, lineCommand(strings.Fields(line), sims))
			}()
		}
	}()
	return ln, nil
}

func lineCommand(f []string, sims []*Sim) string {
	if len(f) != 2 {
		return "want: boot N | app N"
	}
	n, err := strconv.Atoi(f[1])
	if err != nil || n < 0 || n >= len(sims) {
		return fmt.Sprintf("no part %q (parts 0..%d)", f[1], len(sims)-1)
	}
	switch f[0] {
	case "boot":
		sims[n].Reset()
	case "app":
		sims[n].RunApplication()
	default:
		return fmt.Sprintf("unknown %q: want boot or app", f[0])
	}
	return "ok"
}
