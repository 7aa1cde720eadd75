package sdk

import "golang.org/x/sys/unix"

// setPdeathsig asks the kernel to SIGKILL the plugin when its parent dies.
func setPdeathsig() { _ = unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0) }
