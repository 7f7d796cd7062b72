package tests

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/otagw/otagw/internal/api"
	"github.com/otagw/otagw/internal/channel"
	"github.com/otagw/otagw/internal/sign"
)

// testCA writes a CA and a server certificate for 127.0.0.1 into dir and
// returns the CA file, the certificate and its key.
func testCA(t *testing.T, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "otagw test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srvTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{proxiedHost},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage:    x509.KeyUsageDigitalSignature}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, ca, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(srvKey)
	caFile, certFile, keyFile = filepath.Join(dir, "ca.crt"), filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644)
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
	return caFile, certFile, keyFile
}

// proxiedHost names the channel server for a gateway behind a proxy: it
// does not resolve; only the proxy knows where it is.
const proxiedHost = "updates.otagw.test"

// connectProxy is an HTTP CONNECT proxy on 127.0.0.1 that tunnels every
// request to target and counts them.
func connectProxy(t *testing.T, target string) (string, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect || !strings.HasPrefix(r.Host, proxiedHost+":") {
			http.Error(w, "CONNECT to "+proxiedHost+" only", http.StatusForbidden)
			return
		}
		up, err := net.Dial("tcp", target)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		n.Add(1)
		w.WriteHeader(http.StatusOK)
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			up.Close()
			return
		}
		go func() {
			if buf.Reader.Buffered() > 0 {
				b, _ := buf.Reader.Peek(buf.Reader.Buffered())
				up.Write(b)
			}
			io.Copy(up, conn)
			up.Close()
		}()
		io.Copy(conn, up)
		conn.Close()
	}))
	t.Cleanup(srv.Close)
	return srv.URL, &n
}

// nginx is Debian's nginx serving a web root over TLS on 127.0.0.1, in
// the foreground, started and killed by the test.
type nginx struct {
	conf, dir, URL string
	cmd            *exec.Cmd
	done           chan error
}

const nginxBin = "/usr/sbin/nginx"

func startNginx(t *testing.T, root, cert, key, rate string) *nginx {
	t.Helper()
	if _, err := os.Stat(nginxBin); err != nil {
		t.Fatalf("%s missing: install Debian's nginx (scripts/test-deps.sh)", nginxBin)
	}
	dir := testDir(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	for _, d := range []string{"body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		os.MkdirAll(filepath.Join(dir, "tmp", d), 0o755)
	}
	n := &nginx{conf: filepath.Join(dir, "nginx.conf"), dir: dir, URL: fmt.Sprintf("https://127.0.0.1:%d", port)}
	conf := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events { worker_connections 64; }
http {
  log_format range '$request_method $uri $status range="$http_range" bytes=$body_bytes_sent';
  access_log %[1]s/access.log range;
  client_body_temp_path %[1]s/tmp/body;
  proxy_temp_path %[1]s/tmp/proxy;
  fastcgi_temp_path %[1]s/tmp/fastcgi;
  uwsgi_temp_path %[1]s/tmp/uwsgi;
  scgi_temp_path %[1]s/tmp/scgi;
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:%[2]d ssl;
    ssl_certificate %[3]s;
    ssl_certificate_key %[4]s;
    root %[5]s;
    location /stable/files/ { limit_rate %[6]s; }
  }
}
`, dir, port, cert, key, root, rate)
	if err := os.WriteFile(n.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	n.start(t)
	t.Cleanup(func() { n.kill() })
	return n
}

func (n *nginx) start(t *testing.T) {
	t.Helper()
	n.cmd = exec.Command(nginxBin, "-c", n.conf, "-p", n.dir)
	var out bytes.Buffer
	n.cmd.Stdout, n.cmd.Stderr = &out, &out
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n.done = make(chan error, 1)
	go func(c *exec.Cmd, done chan error) { done <- c.Wait() }(n.cmd, n.done)
	addr := strings.TrimPrefix(n.URL, "https://")
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		select {
		case err := <-n.done:
			t.Fatalf("nginx exited: %v\n%s", err, out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if i > 200 {
			t.Fatalf("nginx does not listen on %s", addr)
		}
	}
}

// kill ends this test's nginx with SIGKILL (the pid the test started).
func (n *nginx) kill() {
	if n.cmd == nil || n.cmd.Process == nil {
		return
	}
	n.cmd.Process.Signal(syscall.SIGKILL)
	<-n.done
	n.cmd = nil
}

func (n *nginx) accessLog() string {
	b, _ := os.ReadFile(filepath.Join(n.dir, "access.log"))
	return string(b)
}

// files counts the requests for anything but the index.
func (n *nginx) files() []string {
	var out []string
	for _, l := range strings.Split(n.accessLog(), "\n") {
		if strings.Contains(l, "/stable/files/") {
			out = append(out, l)
		}
	}
	return out
}

// setClock moves the daemon's clock (OTAGW_CLOCK_FILE, faultpoints build).
func setClock(t *testing.T, file string, at time.Time) {
	t.Helper()
	if err := os.WriteFile(file, []byte(at.Format(time.RFC3339)), 0o644); err != nil {
		t.Fatal(err)
	}
}

func powerSupply(t *testing.T, dir string, mains bool, capacity int) {
	t.Helper()
	for name, attrs := range map[string]map[string]string{
		"AC":   {"type": "Mains", "online": map[bool]string{true: "1", false: "0"}[mains]},
		"BAT0": {"type": "Battery", "status": map[bool]string{true: "Charging", false: "Discharging"}[mains], "capacity": fmt.Sprint(capacity)},
	} {
		os.MkdirAll(filepath.Join(dir, name), 0o755)
		for k, v := range attrs {
			os.WriteFile(filepath.Join(dir, name, k), []byte(v+"\n"), 0o644)
		}
	}
}

func channelStatus(t *testing.T, g *gateway) api.ChannelStatus {
	t.Helper()
	st := statusOf(t, g.Socket)
	if st.Channel == nil {
		return api.ChannelStatus{}
	}
	return *st.Channel
}

func (g *gateway) waitChannel(t *testing.T, what string, pred func(api.ChannelStatus) bool) api.ChannelStatus {
	t.Helper()
	var c api.ChannelStatus
	g.waitState(t, what, func(s api.Status) bool {
		if s.Channel != nil {
			c = *s.Channel
		}
		return s.Channel != nil && pred(*s.Channel)
	})
	return c
}

// nextEvent reads s until an event pred accepts, appending every state
// event on the way to states.
func nextEvent(t *testing.T, s *eventStream, what string, states *[]string, pred func(api.Event) bool) api.Event {
	t.Helper()
	timeout := time.After(120 * time.Second)
	for {
		select {
		case ev, ok := <-s.ch:
			if !ok {
				t.Fatalf("the event stream ended waiting for %s; states so far %v", what, *states)
			}
			if ev.Type == "undecodable" || ev.Type == api.EventLagged {
				t.Fatalf("event stream: %+v", ev)
			}
			if ev.Type == api.EventState {
				*states = append(*states, ev.State)
			}
			if pred(ev) {
				return ev
			}
		case <-timeout:
			t.Fatalf("no event %s within 120 s; states so far %v", what, *states)
		}
	}
}

// channelEvent accepts the channel events of kind whose message holds text.
func channelEvent(kind, text string) func(api.Event) bool {
	return func(ev api.Event) bool {
		return ev.Type == api.EventChannel && ev.Kind == kind && strings.Contains(ev.Message, text)
	}
}

// TestChannelEndToEndNginx: a channel published with otagw channel publish
// and served by Debian's nginx over TLS (a test CA) on 127.0.0.1. The
// gateway waits while on a low battery, then for the download window
// (an injected clock); nginx is killed and restarted in the middle of the
// bundle download, which resumes by Range into a byte-exact slot; the
// reboot waits for the next window; after the commit the channel's MCU
// package is flashed once the device's precondition hook passes.
func TestChannelEndToEndNginx(t *testing.T) {
	t.Parallel()
	dir := testDir(t)
	ca, cert, key := testCA(t, dir)
	web := filepath.Join(dir, "web")
	os.MkdirAll(web, 0o755)
	power := filepath.Join(dir, "power_supply")
	powerSupply(t, power, false, 12)
	clk := filepath.Join(dir, "clock")
	noon := time.Date(2026, 6, 1, 12, 0, 0, 0, time.Local)
	setClock(t, clk, noon)
	tty := simSTM32(t, "--chip", "0x410")
	reboot := filepath.Join(dir, "reboot.sh")
	rebooted := filepath.Join(dir, "rebooted")
	os.WriteFile(reboot, []byte("#!/bin/sh\necho \"$OTAGW_REBOOT_REASON\" > "+rebooted+"\n"), 0o755)
	os.WriteFile(filepath.Join(dir, "healthy"), nil, 0o644)
	pumpOK := filepath.Join(dir, "pump-ok")

	ng := startNginx(t, web, cert, key, "256k")
	g := newGatewayIn(t, dir, 16<<20, fmt.Sprintf(`health:
  checks:
    - {name: app-data, file: %[1]s/healthy}
assessment:
  deadline: 60s
  retry_interval: 1s
  committed_unit: ""
maintenance:
  windows:
    - {name: night, start: "0 2 * * *", duration: 2h}
  download: window
  install: window
  reboot: window
channel:
  url: %[2]s/stable/index.json
  name: stable
  ca_file: %[3]s
  interval: 1h
  retry: 1s
  backoff: 1s
  max_backoff: 2s
  config_health_deadline: 3s
preconditions:
  min_battery: 30
  power_supply_dir: %[4]s
downstream:
  buses:
    - {name: uart1, protocol: stm32-uart, port: %[5]s, parity: none, reset: manual}
  devices:
    - {name: pump, bus: uart1, family: F1, product_id: 0x410, precondition: "test -e %[6]s"}
  backoff: 10ms
`, dir, ng.URL, ca, power, tty, pumpOK), fmt.Sprintf("  uptime_file: %s\n  reboot_command: [/bin/sh, %s]\n", filepath.Join(dir, "uptime"), reboot))
	env := []string{"OTAGW_CLOCK_FILE=" + clk}

	img := testImage(6 << 20)
	b := g.bundle(t, "2.0.0", img)
	fw := make([]byte, 8<<10)
	rand.Read(fw)
	os.WriteFile(filepath.Join(dir, "fw.bin"), fw, 0o644)
	pkg := filepath.Join(dir, "pump-1.2.0.otagwpkg")
	if _, e, code := otagw(t, nil, "mcu", "package", "create", "--key", filepath.Join(g.Keys, "signing.key"), "--target", "F1",
		"--product-id", "0x410", "--version", "1.2.0", "--address", "0x08000000", filepath.Join(dir, "fw.bin"), "-o", pkg); code != 0 {
		t.Fatalf("mcu package create: %s", e)
	}
	if out, e, code := otagw(t, nil, "channel", "publish", web, "--key", filepath.Join(g.Keys, "signing.key"),
		"--compatible", "otagw-test-gw", "--bundle", b, "--mcu", pkg, "--expires", "48h"); code != 0 {
		t.Fatalf("channel publish: %s %s", out, e)
	}

	if s := g.boot(t); s != "A" {
		t.Fatalf("first boot: %s", s)
	}
	d := startReady(t, g.Config, env...)
	events := followEvents(t, g.Socket)
	var states []string // the state events of GET /v1/events, in order
	kick := func() {
		t.Helper()
		if _, e, code := otagw(t, nil, "channel", "poll", "--socket", g.Socket); code != 0 {
			t.Fatalf("channel poll: %s", e)
		}
	}

	// On battery at 12 %: postponed, nothing but the index fetched.
	c := g.waitChannel(t, "postponed on battery", func(c api.ChannelStatus) bool { return c.State == "postponed" })
	if !strings.Contains(c.Reason, "battery BAT0 at 12% (below 30%)") || c.Sequence != 1 {
		t.Errorf("channel status on battery: %+v", c)
	}
	// ... and on the event stream (checked again at every retry).
	nextEvent(t, events, "postponed on battery", &states, channelEvent("postponed", "battery BAT0 at 12% (below 30%)"))
	// Mains back: the download window (02:00-04:00) is closed at noon.
	powerSupply(t, power, true, 12)
	kick()
	c = g.waitChannel(t, "waiting for the download window", func(c api.ChannelStatus) bool { return c.State == "waiting" })
	if !strings.Contains(c.Reason, "download is only allowed in a maintenance window") {
		t.Errorf("channel status at noon: %+v", c)
	}
	nextEvent(t, events, "waiting for the download window", &states, channelEvent("waiting", "download is only allowed in a maintenance window"))
	if f := ng.files(); len(f) != 0 {
		t.Fatalf("files requested before the window: %q", f)
	}

	// 02:30 the next night: the download starts. Kill nginx once the slot
	// holds data, move the clock past the window, start nginx again.
	setClock(t, clk, noon.Add(14*time.Hour+30*time.Minute))
	kick()
	deadline := time.Now().Add(120 * time.Second)
	for {
		head := make([]byte, 4096)
		if f, err := os.Open(g.SlotB); err == nil {
			f.Read(head)
			f.Close()
		}
		if bytes.Equal(head, img[:4096]) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the download never reached the slot; channel %+v\nnginx:\n%s", channelStatus(t, g), ng.accessLog())
		}
		time.Sleep(20 * time.Millisecond)
	}
	ng.kill()
	if st := statusOf(t, g.Socket); st.State == "installed" {
		t.Fatalf("the install finished before nginx was killed; lower limit_rate")
	}
	setClock(t, clk, noon.Add(16*time.Hour+30*time.Minute)) // 04:30: the window has closed
	ng.start(t)
	st := g.waitState(t, "installed", func(s api.Status) bool { return s.State == "installed" || s.State == "failed" || s.LastError != nil })
	if st.State != "installed" || st.Release == nil || st.Release.Pending != "2.0.0" {
		t.Fatalf("after the download: %+v %+v", st, st.LastError)
	}
	if log := ng.accessLog(); !strings.Contains(log, " 206 range=\"bytes=") {
		t.Errorf("no Range request after nginx came back:\n%s", log)
	}
	got := make([]byte, len(img))
	f, _ := os.Open(g.SlotB)
	f.ReadAt(got, 0)
	f.Close()
	if !bytes.Equal(got, img) {
		t.Fatalf("slot B differs from the release image")
	}
	// The reboot waits for the next window.
	if st.Maintenance == nil || st.Maintenance.RebootAt == nil {
		t.Errorf("no reboot scheduled: %+v", st.Maintenance)
	}
	if _, err := os.Stat(rebooted); err == nil {
		t.Fatalf("rebooted outside the window")
	}
	inst := nextEvent(t, events, "state installing", &states, func(ev api.Event) bool { return ev.Type == api.EventState && ev.State == "installing" })
	if inst.Source != "channel" || inst.Release != "2.0.0" {
		t.Errorf("the install's first state event %+v, want source channel, release 2.0.0", inst)
	}
	nextEvent(t, events, "state installed", &states, func(ev api.Event) bool { return ev.Type == api.EventState && ev.State == "installed" })
	if !inOrder(states, []string{"idle", "downloading", "installing", "installed"}) {
		t.Errorf("states on GET /v1/events %q, want idle, downloading, installing, installed in order", states)
	}
	setClock(t, clk, noon.Add(38*time.Hour+time.Minute)) // 02:01 the night after
	if _, e, code := otagw(t, nil, "reload", "--socket", g.Socket); code != 0 {
		t.Fatalf("reload: %s", e)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if why, err := os.ReadFile(rebooted); err == nil {
			if !strings.Contains(string(why), `maintenance window "night"`) {
				t.Errorf("reboot reason %q", why)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no reboot in the window")
		}
	}
	d.stop(t)

	// The new release boots, is assessed and committed; then the MCU
	// package: the pump's precondition hook fails first.
	if s := g.boot(t); s != "B" {
		t.Fatalf("boot after install: %s", s)
	}
	d = startReady(t, g.Config, env...)
	events, states = followEvents(t, g.Socket), nil
	c = g.waitChannel(t, "MCU postponed by the pump's hook", func(c api.ChannelStatus) bool {
		return c.State == "postponed" && strings.Contains(c.Reason, "pump")
	})
	// A fan-out that the hook postponed, then the agent's postponement,
	// on the event stream (the agent tries again every second).
	nextEvent(t, events, "pump postponed", &states, func(ev api.Event) bool {
		return ev.Type == api.EventDevice && ev.Device == "pump" && ev.Result == "postponed"
	})
	nextEvent(t, events, "MCU postponed by the pump's hook", &states, channelEvent("postponed", "pump"))
	st = statusOf(t, g.Socket)
	if st.Release == nil || st.Release.Committed != "2.0.0" {
		t.Fatalf("MCU work before the commit: %+v", st.Release)
	}
	if len(st.MCUs) != 1 || st.MCUs[0].Result != "postponed" {
		t.Errorf("pump: %+v", st.MCUs)
	}
	os.WriteFile(pumpOK, nil, 0o644)
	c = g.waitChannel(t, "MCU flashed", func(c api.ChannelStatus) bool { return c.State == "idle" })
	st = statusOf(t, g.Socket)
	if len(st.MCUs) != 1 || st.MCUs[0].Result != "success" || st.MCUs[0].Version != "1.2.0" {
		t.Errorf("pump after the hook passed: %+v", st.MCUs)
	}
	nextEvent(t, events, "pump flashed", &states, func(ev api.Event) bool {
		return ev.Type == api.EventDevice && ev.Device == "pump" && ev.Result == "success"
	})
	nextEvent(t, events, "the agent idle", &states, channelEvent("idle", ""))
	// Two fan-outs from the committed release, the channel's download of
	// the package before each.
	if want := []string{"flashing", "committed", "downloading", "committed", "flashing", "committed"}; !inOrder(states, want) {
		t.Errorf("states on GET /v1/events %q, want %q in order (two fan-outs)", states, want)
	}
	d.stop(t)
}

// TestChannelRemoteConfigNginx: a config document from the channel (nginx
// over TLS, reached through the HTTPS proxy named in the daemon's
// environment) that fails validation is refused and the running config is
// untouched; one that validates but breaks a health check is reverted;
// otagw config history shows both and the one applied.
func TestChannelRemoteConfigNginx(t *testing.T) {
	t.Parallel()
	dir := testDir(t)
	ca, cert, key := testCA(t, dir)
	web := filepath.Join(dir, "web")
	os.MkdirAll(web, 0o755)
	ng := startNginx(t, web, cert, key, "0")
	proxy, tunnels := connectProxy(t, strings.TrimPrefix(ng.URL, "https://"))
	chURL := strings.Replace(ng.URL, "127.0.0.1", proxiedHost, 1)
	os.WriteFile(filepath.Join(dir, "healthy"), nil, 0o644)
	g := newGatewayIn(t, dir, 1<<20, fmt.Sprintf(`health:
  checks:
    - {name: app-data, file: %[1]s/healthy}
channel:
  url: %[2]s/stable/index.json
  ca_file: %[3]s
  retry: 1s
  backoff: 1s
  max_backoff: 2s
  config_health_deadline: 2s
`, dir, chURL, ca), "")
	local, _ := os.ReadFile(g.Config)
	signer, err := sign.LoadSigner(filepath.Join(g.Keys, "signing.key"))
	if err != nil {
		t.Fatal(err)
	}
	// Published with the Go API: otagw channel publish itself refuses a
	// config that does not validate.
	publish := func(doc string) {
		t.Helper()
		p := filepath.Join(t.TempDir(), "otagw.yaml")
		os.WriteFile(p, []byte(doc), 0o644)
		if _, err := channel.Publish(channel.PublishOptions{Dir: web, Channel: "stable", Compatible: "otagw-test-gw", Config: p,
			Expires: time.Hour, Signers: []sign.Signer{signer}}); err != nil {
			t.Fatal(err)
		}
	}
	history := func() []api.ConfigVersion {
		t.Helper()
		out, e, code := otagw(t, nil, "config", "history", "--json", "--socket", g.Socket)
		if code != 0 {
			t.Fatalf("config history: %s", e)
		}
		var vs []api.ConfigVersion
		if err := json.Unmarshal([]byte(out), &vs); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		return vs
	}
	waitHistory := func(n int) []api.ConfigVersion {
		t.Helper()
		for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if vs := history(); len(vs) >= n {
				return vs
			}
		}
		t.Fatalf("config history never reached %d entries: %+v", n, history())
		return nil
	}

	publish(strings.Replace(string(local), "daemon:\n", "daemon:\n  log_level: loud\n", 1))
	d := startReady(t, g.Config, "HTTPS_PROXY="+proxy, "https_proxy="+proxy, "NO_PROXY=", "no_proxy=")
	vs := waitHistory(1)
	if vs[0].Outcome != "rejected" || !strings.Contains(vs[0].Reason, "daemon.log_level") {
		t.Errorf("invalid config: %+v", vs[0])
	}
	if now, _ := os.ReadFile(g.Config); !bytes.Equal(now, local) {
		t.Errorf("a refused config changed the file")
	}
	if st := statusOf(t, g.Socket); st.ConfigGeneration != 1 {
		t.Errorf("a refused config was loaded: generation %d", st.ConfigGeneration)
	}

	broken := strings.Replace(string(local), "    - {name: app-data", "    - {name: modbus-bridge, file: "+filepath.Join(dir, "missing")+"}\n    - {name: app-data", 1)
	publish(broken)
	otagw(t, nil, "channel", "poll", "--socket", g.Socket)
	vs = waitHistory(2)
	if vs[1].Outcome != "reverted" || !strings.Contains(vs[1].Reason, "modbus-bridge") {
		t.Errorf("health-breaking config: %+v", vs[1])
	}
	if now, _ := os.ReadFile(g.Config); !bytes.Equal(now, local) {
		t.Errorf("the previous config was not restored:\n%s", now)
	}

	good := strings.Replace(string(local), "daemon:\n", "daemon:\n  log_level: debug\n", 1)
	publish(good)
	otagw(t, nil, "channel", "poll", "--socket", g.Socket)
	vs = waitHistory(3)
	if vs[2].Outcome != "applied" {
		t.Errorf("good config: %+v", vs[2])
	}
	if st := statusOf(t, g.Socket); st.LogLevel != "debug" {
		t.Errorf("log level after the applied config: %q", st.LogLevel)
	}
	if tunnels.Load() == 0 {
		t.Errorf("the daemon did not go through the proxy in HTTPS_PROXY")
	}
	out, _, _ := otagw(t, nil, "config", "history", "--socket", g.Socket)
	for _, w := range []string{"rejected", "reverted", "applied"} {
		if !strings.Contains(out, w) {
			t.Errorf("otagw config history lacks %s:\n%s", w, out)
		}
	}
	d.stop(t)
}
