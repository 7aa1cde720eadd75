#!/bin/sh
# Plays ssh refusing to log in: ssh itself exits 255.
echo "$1: Permission denied (publickey)." >&2
exit 255
