// Command countserver serves a directory over HTTP on 127.0.0.1 (Range and
// multi-range requests as net/http does them) and counts the body bytes it
// sends, for the delta benchmark (scripts/bench-delta.sh):
//
//	countserver -dir DIR -addr 127.0.0.1:0 -port-file F &
//	curl http://127.0.0.1:PORT/__count   # {"bytes":N,"requests":R,"open_ranges":O}
//	curl http://127.0.0.1:PORT/__reset
//
// open_ranges counts requests whose Range does not name its end (bytes=N-).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
)

type counter struct {
	bytes, requests, open atomic.Int64
}

type countWriter struct {
	http.ResponseWriter
	c *counter
}

func (w countWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.c.bytes.Add(int64(n))
	return n, err
}

func main() {
	dir := flag.String("dir", ".", "directory to serve")
	addr := flag.String("addr", "127.0.0.1:0", "listen address (keep it on 127.0.0.1)")
	portFile := flag.String("port-file", "", "write the port chosen here")
	flag.Parse()
	var c counter
	files := http.FileServer(http.Dir(*dir))
	mux := http.NewServeMux()
	mux.HandleFunc("/__count", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]int64{"bytes": c.bytes.Load(), "requests": c.requests.Load(), "open_ranges": c.open.Load()})
	})
	mux.HandleFunc("/__reset", func(w http.ResponseWriter, r *http.Request) {
		c.bytes.Store(0)
		c.requests.Store(0)
		c.open.Store(0)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		c.requests.Add(1)
		if rg := r.Header.Get("Range"); rg != "" && strings.HasSuffix(rg, "-") {
			c.open.Add(1)
		}
		files.ServeHTTP(countWriter{w, &c}, r)
	})
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("countserver: listen %s: %v", *addr, err)
	}
	if *portFile != "" {
		if err := os.WriteFile(*portFile, []byte(fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)), 0o644); err != nil {
			log.Fatalf("countserver: port file %s: %v", *portFile, err)
		}
	}
	log.Fatal(http.Serve(ln, mux))
}
