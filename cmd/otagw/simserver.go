package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

func init() {
	register("sim server", "simulated update server: serve a directory over HTTP with Range (prints its URL)", runSimServer)
}

// runSimServer is the update server of the simulated gateway: plain HTTP
// with Range support (net/http's file server), on 127.0.0.1 by default.
func runSimServer(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("otagw sim server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", ".", "directory to serve")
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if st, err := os.Stat(*dir); err != nil || !st.IsDir() {
		fmt.Fprintf(stderr, "otagw sim server: %s is not a directory\n", *dir)
		return 2
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(stderr, "otagw sim server:", err)
		return 1
	}
	fmt.Fprintf(stdout, "http://%s/\n", ln.Addr())
	if f, ok := stdout.(*os.File); ok {
		f.Sync()
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(*dir)), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
		fmt.Fprintln(stderr, "otagw sim server:", err)
		return 1
	}
	return 0
}
