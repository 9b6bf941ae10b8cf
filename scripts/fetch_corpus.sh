#!/usr/bin/env bash
# fetch_corpus.sh — builds the default training corpus from Debian packages (docs: shared corpus.md).
#   usage: scripts/fetch_corpus.sh [OUT=data] [--large]
# Output: OUT/txt/ with one plain-text file per document:
#   kjv/NN_<book>.txt, web/NN_<book>.txt   King James + World English Bibles, one file per book
#   austen/<novel>.txt                      the six novels (Persuasion, Northanger Abbey are held out
#                                           for validation by `dsa train`)
#   jargon/jargon.txt                       the Jargon File
#   --large adds pydoc/*.txt (Python 3.11 reST docs) and kdoc/*.txt (Linux Documentation/*.rst).
# Packages are fetched with `apt-get download` and unpacked with `dpkg-deb -x`: nothing is installed,
# no dependencies are pulled. Re-running is a no-op once OUT/txt/.complete exists.
set -euo pipefail
OUT=data; LARGE=0
for a in "$@"; do
  case "$a" in
    --large) LARGE=1 ;;
    -*) echo "fetch_corpus.sh: unknown flag $a" >&2; exit 2 ;;
    *) OUT=$a ;;
  esac
done
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
if [ -f "$OUT/txt/.complete" ] && { [ $LARGE = 0 ] || [ -d "$OUT/txt/pydoc" ]; }; then
  echo "corpus: $OUT/txt already complete ($(du -sh "$OUT/txt" | cut -f1))"; exit 0
fi
command -v apt-get >/dev/null || { echo "fetch_corpus.sh: needs apt-get (Debian/Ubuntu)" >&2; exit 1; }
DL="$OUT/dl"; R="$OUT/root"; T="$OUT/txt.partial"
rm -rf "$T"; mkdir -p "$DL" "$R" "$T"/{kjv,web,austen,jargon}
start=$(date +%s)
# A machine whose package lists were never fetched knows no package: fetch them once.
apt-cache show bible-kjv >/dev/null 2>&1 || apt-get update -qq
(cd "$DL" && apt-get download -q bible-kjv bible-kjv-text r-cran-janeaustenr jargon-text \
   diatheke libsword1.9.0 libsword-common libclucene-core1v5 sword-text-web 2>&1 | grep -v -e unsandboxed -e '^Get:' || true)
for f in "$DL"/*.deb; do dpkg-deb -x "$f" "$R"; done

# split_books DIR: reads "BOOKKEY<TAB>verse" lines, writes DIR/NN_BOOKKEY.txt (one file per book)
split_books() {
  awk -F '\t' -v dir="$1" '
    $1 != book { book = $1; n++; name = book; gsub(/[^A-Za-z0-9]/, "_", name);
                 if (file) close(file); file = sprintf("%s/%02d_%s.txt", dir, n, name) }
    { print $2 > file }'
}
# KJV: "Ge1:1 text"; the bible program's -d takes a path relative to the cwd.
(cd "$R/usr/lib" && ../bin/bible -f -d bible.data gen1:1-rev22:21 </dev/null) \
  | sed -E 's/^([1-3]?[A-Za-z]+)[0-9]+:[0-9]+ /\1\t/' | split_books "$T/kjv"
# World English Bible through SWORD's diatheke, run from the unpacked libraries: "Genesis 1:1: text".
# OSIS tags survive on a few lines; those lines are dropped.
if LD_LIBRARY_PATH="$R/usr/lib/x86_64-linux-gnu" SWORD_PATH="$R/usr/share/sword" \
     "$R/usr/bin/diatheke" -b engWEB2015eb -f plain -k "Genesis 1:1-Revelation 22:21" 2>/dev/null \
   | grep -v '<' | grep -E '^[[:space:]]*[1-3]?[A-Za-z ()]+ [0-9]+:[0-9]+: ' \
   | sed -E 's/^[[:space:]]*([1-3]?[A-Za-z ()]+) [0-9]+:[0-9]+: /\1\t/' | split_books "$T/web"; then :; fi
[ -n "$(ls "$T/web")" ] || { echo "corpus: warning: diatheke failed; continuing without the World English Bible" >&2; rmdir "$T/web"; }
python3 "$HERE/austen.py" "$R" "$T/austen" >/dev/null
zcat "$R/usr/share/doc/jargon-text/jargon.txt.gz" > "$T/jargon/jargon.txt"

if [ $LARGE = 1 ]; then
  (cd "$DL" && apt-get download -q python3.11-doc linux-source-6.1 2>&1 | grep -v -e unsandboxed -e '^Get:' || true)
  for f in "$DL"/python3.11-doc_*.deb "$DL"/linux-source-6.1_*.deb; do dpkg-deb -x "$f" "$R"; done
  mkdir -p "$T/pydoc" "$T/kdoc"
  (cd "$R/usr/share/doc/python3.11/html/_sources" && find . -name '*.rst.txt' | sort | while read -r f; do
     g=${f#./}; cp "$f" "$T/pydoc/${g//\//_}"; done)
  tar xJf "$R"/usr/src/linux-source-6.1.tar.xz -C "$R" --wildcards 'linux-source-6.1/Documentation/*'
  (cd "$R/linux-source-6.1/Documentation" && find . -path ./translations -prune -o -name '*.rst' -print | sort \
     | while read -r f; do g=${f#./}; cp "$f" "$T/kdoc/${g//\//_}.txt"; done)
fi
touch "$T/.complete"
rm -rf "$OUT/txt"; mv "$T" "$OUT/txt"
echo "corpus: $(find "$OUT/txt" -type f -name '*.txt' | wc -l) documents, $(du -sh "$OUT/txt" | cut -f1) in $OUT/txt ($(( $(date +%s) - start )) s)"
