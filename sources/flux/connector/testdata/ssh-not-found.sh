#!/bin/sh
# Plays `ssh host flux relay PATH` on a host without flux in its PATH:
# the remote shell cannot find the command and ssh passes its status on.
echo 'bash: flux: command not found' >&2
exit 127
