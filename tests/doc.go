// Package tests holds otagw's end-to-end tests: they build the real binary
// and drive it the way systemd, an operator and the hardware would (a
// NOTIFY_SOCKET owned by the test, callers with other uids, env images
// checked with fw_printenv, loop-device slots, simulated MCUs on
// pseudo-terminals). They run as root, as CI does; a test that needs
// something missing fails with the reason instead of skipping.
package tests
