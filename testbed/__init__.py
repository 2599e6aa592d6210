"""The xsmig testbed: emulated i386/amd64 hosts in Docker, and migrations between them."""
