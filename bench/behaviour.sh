#!/bin/bash
# Behaviour snapshot of the command line on a real library: every command's output and exit code, every tag of
# every file, every database record (times, ids and sizes normalised). Run it for two checkouts and compare:
#   bench/behaviour.sh OUT_BEFORE /path/to/old/checkout; bench/behaviour.sh OUT_AFTER .
#   bench/behaviour.sh --compare OUT_BEFORE OUT_AFTER
# Needs ../shared/audio and, for three more tracks, Debian's singularity-music unpacked under $SINGULARITY.
if [ "$1" = "--compare" ]; then
  for f in $(cd "$2"; ls); do
    [ "$f" = audio.sha ] && continue  # the files' bytes hold TAGGER_DATE; tags.txt compares their tags
    if ! diff -q <(sort "$2/$f") <(sort "$3/$f") >/dev/null; then echo "DIFF $f"; diff <(sort "$2/$f") <(sort "$3/$f") | head -20; fi
  done
  exit 0
fi
set -u
OUT=$(realpath -m "$1"); REPO=$(realpath "${2:-.}")
SHARED=${SHARED:-$REPO/../shared}
SINGULARITY=${SINGULARITY:-/tmp/deb/x/usr/share/games/singularity/music}
W=${W:-/tmp/tagger-behaviour}
PY=${PY:-$REPO/.venv/bin/python}
T="env PYTHONPATH=$REPO $PY -m tagger"
rm -rf $W/lib $W/db $W/home; mkdir -p $W/lib/a $W/lib/b $W/home $OUT
export HOME=$W/home XDG_CONFIG_HOME=$W/home/.config XDG_CACHE_HOME=$W/home/.cache
cp $SHARED/audio/*.ogg $W/lib/a/; chmod u+w $W/lib/a/*
ls $SINGULARITY/*.ogg 2>/dev/null | head -3 | xargs -I{} cp {} $W/lib/b/
PYTHONPATH=$REPO/tests:$REPO $PY - <<P
import av, numpy as np
from pathlib import Path
from audiofiles import write_audio
for src, dst in (("a/Kevin_MacLeod_-_Vibe_Ace.ogg", "b/vibe.mp3"), ("a/Karissa_Hobbs_-_Lets_Go_Fishin.ogg", "b/fish.flac")):
    with av.open("$W/lib/" + src) as c:
        frames = [f.to_ndarray() for f in c.decode(audio=0)]
        rate = c.streams.audio[0].rate
    x = np.concatenate(frames, axis=1)[:, : rate * 40]
    write_audio(Path("$W/lib/" + dst), x.astype(np.float32), rate)
P
cat > $W/cfg.yaml <<C
library: [$W/lib]
database: $W/db
C
C="--config $W/cfg.yaml"
run() { name=$1; shift; "$@" >$OUT/$name.out 2>$OUT/$name.err; echo "$name rc=$?" >>$OUT/rc.txt; }
cd $W
run scan_pretend $T scan $C --pretend --json
run scan $T scan $C --json
run scan_again $T scan $C
run show_json $T show $C --json $W/lib/a/Kevin_MacLeod_-_Vibe_Ace.ogg
run show_text $T show $C $W/lib/b/fish.flac
run similar $T similar $C $W/lib/a/Kevin_MacLeod_-_Vibe_Ace.ogg
run playlist $T playlist $C --tags Classical
run playlist_bad $T playlist $C --tags nosuchtag
run analyze $T analyze $C --json $W/lib/b/vibe.mp3
run set $T set $C $W/lib/b/vibe.mp3 --genre Jazz
run eval $T eval $C --json
run undo $T undo $C $W/lib/a/sorohanro_-_solo-trumpet-06.ogg
run show_missing $T show $C $W/nope.ogg
run config $T config $C
run badconf $T scan --config $W/nope.yaml
(cd $W/lib && find . -type f -print0 | sort -z | xargs -0 sha256sum) > $OUT/audio.sha
$PY - > $OUT/tags.txt <<P
import mutagen, pathlib
for p in sorted(pathlib.Path('$W/lib').rglob('*')):
    if p.is_file():
        f = mutagen.File(p)
        print(p, sorted((k, str(v)) for k, v in (f.tags or {}).items()) if f is not None else None)
P
PYTHONPATH=$REPO $PY - > $OUT/db.txt <<P
import json, numpy as np, re
try:
    from tagger.library.store import Store
except ImportError:
    from tagger.store import Store
from pathlib import Path
s = Store(Path("$W/db"), writer=False)
def clean(o):
    if isinstance(o, dict):
        return {k: clean(v) for k, v in sorted(o.items()) if k not in ("mtime_ns", "analysed_at", "size", "id", "slot", "track_id")}
    if isinstance(o, list):
        return [clean(v) for v in o]
    if isinstance(o, float):
        return round(o, 4)
    if isinstance(o, str):
        return re.sub(r"\\d{4}-\\d\\d-\\d\\dT[0-9:.Z+-]+", "TS", o)
    return o
recs = sorted(s.records(), key=lambda r: (r.get("path"), r.get("model", "")))
for r in recs:
    print(json.dumps(clean(r), sort_keys=True))
P
sed -i -E 's/[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.+Z-]+/TS/g; s/[0-9]+\.[0-9]+ ?s\b/Xs/g; s/"seconds": [0-9.]+/"seconds": X/g; s/"(mtime_ns|track_id|id)": [0-9a-f"]+/"\1": X/g' $OUT/*.out $OUT/*.err $OUT/db.txt $OUT/tags.txt
