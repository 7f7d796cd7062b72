// esptool-js against a serial port path (a pseudo-terminal of otagw sim
// esp32), through a small stand-in for the Web Serial port object:
//   node flash.mjs PORT IMAGE ADDRESS READBACK [BAUD]
// writes IMAGE at ADDRESS (stub, compressed, MD5-checked by esptool-js),
// reads it back into READBACK ("-": no read-back, for benchmarks). Exit 0 only if every step succeeded.
import crypto from "node:crypto";
import fs from "node:fs";
import tty from "node:tty";
import { Readable } from "node:stream";
import { ESPLoader, Transport } from "esptool-js";

const [port, imagePath, addrArg, readbackPath, baudArg] = process.argv.slice(2);

// SerialPortStandIn has what esptool-js's Transport uses of a Web Serial port.
class SerialPortStandIn {
  constructor(path) { this.path = path; this.readable = null; this.writable = null; }
  getInfo() { return { usbVendorId: 0x10c4, usbProductId: 0xea60 }; }
  async open(_opts) {
    this.fd = fs.openSync(this.path, "r+");
    this.tty = new tty.ReadStream(this.fd);
    this.tty.setRawMode(true);
    this.readable = Readable.toWeb(this.tty);
    const fd = this.fd;
    // the tty stream made fd non-blocking: write everything, waiting out EAGAIN
    this.writable = new WritableStream({
      async write(chunk) {
        let off = 0;
        while (off < chunk.length) {
          try {
            off += fs.writeSync(fd, chunk, off, chunk.length - off);
          } catch (e) {
            if (e.code !== "EAGAIN") throw e;
            await new Promise((r) => setTimeout(r, 1));
          }
        }
      },
    });
  }
  async setSignals(_s) { /* a pty has no modem lines; the simulator is always in its ROM */ }
  async close() {
    this.tty.destroy();
    this.readable = null;
    this.writable = null;
  }
}

const terminal = { clean() {}, writeLine(s) { console.error(s); }, write(s) { process.stderr.write(s); } };
const device = new SerialPortStandIn(port);
const transport = new Transport(device, false);
const baud = Number(baudArg || 115200);
const loader = new ESPLoader({ transport, baudrate: baud, romBaudrate: 115200, terminal, debugLogging: false });
try {
  const chip = await loader.main();
  console.error("esptool-js: chip " + chip);
  const img = fs.readFileSync(imagePath);
  const addr = Number(addrArg);
  await loader.writeFlash({
    fileArray: [{ data: new Uint8Array(img), address: addr }],
    flashSize: "keep", flashMode: "keep", flashFreq: "keep",
    eraseAll: false, compress: true,
    calculateMD5Hash: (image) => crypto.createHash("md5").update(image).digest("hex"),
  });
  console.error("esptool-js: written and MD5-verified");
  if (readbackPath !== "-") {
    const back = await loader.readFlash(addr, img.length);
    fs.writeFileSync(readbackPath, back);
    console.error("esptool-js: read back " + back.length + " bytes");
  }
  await transport.disconnect();
  process.exit(0);
} catch (e) {
  console.error("esptool-js failed: " + (e && e.stack || e));
  process.exit(1);
}
