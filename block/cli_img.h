/* kvmbox img: qemu-img's everyday subcommands on kvmbox's block layer. */
#ifndef KVMBOX_CLI_IMG_H
#define KVMBOX_CLI_IMG_H

/* argv[0] is "img". Returns the process exit status (0 ok, 1 error, 2 usage; check and
 * compare use qemu-img's statuses). */
int cli_img_main(int argc, char **argv);

#endif
