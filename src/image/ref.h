/* The image a sandbox gets when nothing names one (the one scripts/install.sh
 * builds): the one definition the daemon, the CLI and doctor use. A header of
 * its own so that the CLI, which reaches the image store only through the
 * daemon, can name it without including image.h. */
#pragma once

#define IMAGE_DEFAULT_REF "cleanroom-base/debian:bookworm"
