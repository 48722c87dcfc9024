#!/bin/bash
# Prints the C program of a man page's EXAMPLE: the lines between the roff comments
# `.\" example-begin` and `.\" example-end`, with the escapes the page uses turned back into
# C (\- \e \(dq \(aq \&). Fails when the markers are missing or an escape is left over, so
# the page and the program the tests build can never differ.
set -euo pipefail
page=${1:?usage: extract-example.sh PAGE}
out=$(sed -n '/^\.\\" example-begin/,/^\.\\" example-end/p' "$page" | sed '1d;$d' |
  sed -e 's/\\-/-/g' -e 's/\\(dq/"/g' -e "s/\\\\(aq/'/g" -e 's/\\&//g' -e 's/\\e/\\/g')
[ -n "$out" ] || { echo "extract-example: no example-begin/example-end in $page" >&2; exit 1; }
if echo "$out" | grep -n -E '^\.|\\f|\\\(' >&2; then
  echo "extract-example: roff left in the example of $page (lines above)" >&2
  exit 1
fi
printf '%s\n' "$out"
