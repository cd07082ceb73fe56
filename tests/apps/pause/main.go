// Command pause is the sandbox ("pause") container of the test node's pods:
// it holds the pod's namespaces open and sleeps until it is told to stop.
//
// It is PID 1 in its container, where the kernel delivers no signal that the
// process has no handler for, so it handles SIGTERM and SIGINT explicitly
// and exits 0 on either. Reaping zombies is not needed: the test pods do not
// share their PID namespace.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 {
		fmt.Fprintln(os.Stderr, "usage: pause (takes no arguments; stops on SIGTERM or SIGINT)")
		os.Exit(64)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	sig := <-stop
	fmt.Fprintf(os.Stderr, "pause: %v received, exiting\n", sig)
}
