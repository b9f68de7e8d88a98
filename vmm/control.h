/* What the control socket's server needs from the library beyond include/kvmbox.h: the
 * calls that belong to the VM's own threads, not to embedders. */
#ifndef KVMBOX_CONTROL_H
#define KVMBOX_CONTROL_H

#include "include/kvmbox.h"

/* Called once by the API thread when its setup is done: enters its seccomp sandbox (unless
 * the VM runs with --sandbox off); a failure stops the VM with a message. */
void control_api_thread_sandbox(struct kvmbox_vm *vm);

#endif
