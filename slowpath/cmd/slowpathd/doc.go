// Command slowpathd is Palisade's appliance daemon: it binds to the host's
// fast path over the link-local channel and runs the deep-inspection engines.
package main
