#!/usr/bin/env bash
# Datasets, pretrained networks and metric weights.
#
#   bash download.sh <target> [argument]
#
# Run it from anywhere; paths (data/, expr/) are relative to the repository.
# Every file is downloaded to <name>.part and renamed when complete, so an
# interrupted download never looks finished, and its SHA-256 is checked
# against the one recorded below before anything is extracted or used.
# Run without a target for the list.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python}
DOWNLOADS=${STARGAN_DOWNLOADS:-data/downloads}   # where archives are kept (another folder: set STARGAN_DOWNLOADS)

# The SHA-256 of every file this script downloads. An empty entry is a digest not recorded yet: such a
# file is refused (nothing is extracted) unless STARGAN_SHA256 gives the digest you trust for it, e.g.
# one published by its source or that of a copy you checked.
known_sha256() {  # known_sha256 KEY
    case "$1" in
        alps_seasons.zip) echo "" ;;
        celeba_hq.zip) echo "" ;;
        afhq.zip) echo "" ;;
        afhq_v2.zip) echo "" ;;
        stargan-v2-afhq.ckpt) echo "" ;;
        hsrc_seasons) echo "" ;;
        hsrc_weather) echo "" ;;
        horse2zebra.zip) echo "" ;;
        cityscapes_val_for_CUT.tar) echo "" ;;
        cut_pretrained_models.tar) echo "" ;;
        *) echo "" ;;
    esac
}

usage() {
    cat <<'EOF'
usage: bash download.sh <target> [argument]

Every download is checked against its recorded SHA-256 before it is used; for a file whose digest is
not recorded yet, give the one you trust: STARGAN_SHA256=<hex> bash download.sh <target>

metric weights (into $STARGAN_WEIGHTS_DIR, default ~/.cache/stargan-src/weights; SHA-256 checked)
  metric-weights                  Inception v3 (torchvision and TF-FID) and AlexNet for --mode eval
  vgg16                           torchvision VGG16 (features of some patch-loss plug-ins)
  drn [FILE]                      DRN-D-22 Cityscapes segmenter (a web page: run without FILE for the steps)
datasets (split into data/<name>/train and data/<name>/val with a manifest, see --mode prepare)
  seasons                         ComboGAN alps_seasons (4 seasons; 100 val images per season)
  weather [ARCHIVE]               Five-class weather dataset (needs a login: run without ARCHIVE for the steps)
  synthetic-seasons               procedural stand-in for seasons (data/synthetic-seasons), no download
  synthetic-weather               procedural stand-in for weather (data/synthetic-weather), no download
  celeba-hq-dataset, afhq-dataset, afhq-v2-dataset     StarGAN v2's datasets (into data/)
unpaired two-domain datasets in CUT's layout (data/<name>/trainA, trainB, testA, testB)
  horse2zebra                     CycleGAN/CUT horse2zebra
  cityscapes                      prints the manual steps (cityscapes-dataset.com needs a login)
  cityscapes-val-cut              CUT's resized and JPEG-compressed Cityscapes val set (data/cityscapes_val_cut)
pretrained networks (into expr/checkpoints/)
  pretrained-stargan-v2-afhq        (alias pretrained-network-afhq)      official AFHQ, 100k
  pretrained-hsrc-seasons           Hneg_SRC release, Seasons (Google Drive)
  pretrained-hsrc-weather           Hneg_SRC release, Weather (Google Drive)
  pretrained-cut                    CUT and FastCUT generators: horse2zebra, cityscapes, cat2dog
  pretrained-hsrc-single-modal      prints the manual steps (Hneg_SRC's one-sided models, Google Drive)
EOF
}

fail() { echo "error: $*" >&2; exit 1; }

# fetch URL OUT: download URL to OUT (resumable, via OUT.part)
fetch() {
    local url=$1 out=$2
    mkdir -p "$(dirname "$out")"
    if [ -s "$out" ]; then echo "already there: $out"; return 0; fi
    echo "downloading $url"
    if command -v curl >/dev/null 2>&1; then
        curl -L --fail --retry 3 -C - -o "$out.part" "$url" || fail "download of $url failed$(partial_note "$out")"
    elif command -v wget >/dev/null 2>&1; then
        wget -c -O "$out.part" "$url" || fail "download of $url failed$(partial_note "$out")"
    else
        fail "neither curl nor wget is installed"
    fi
    mv "$out.part" "$out"
}

partial_note() {  # what is left of a failed download of OUT
    if [ -s "$1.part" ]; then echo " (partial file kept as $1.part; run again to resume)"; fi
}

sha256() { "$PYTHON" -c 'import sys; from core.data.manifest import sha256_file; print(sha256_file(sys.argv[1]))' "$1"; }

unpack() {  # unpack ZIP DEST (Python's zipfile: no unzip binary needed)
    mkdir -p "$2"
    "$PYTHON" -m zipfile -e "$1" "$2" || fail "$1 is not a readable zip archive (delete it and download again)"
}

verify() {  # verify FILE KEY: refuse FILE unless its SHA-256 is the recorded one of KEY (or $STARGAN_SHA256)
    local file=$1 key=$2 expected actual
    expected=$(known_sha256 "$key")
    [ -n "$expected" ] || expected=${STARGAN_SHA256:-}
    actual=$(sha256 "$file")
    [ -n "$expected" ] || fail "no SHA-256 is recorded for $key, so $file cannot be verified; nothing was extracted. Its SHA-256 is $actual: if you trust it (compare it with one its source publishes), run again with STARGAN_SHA256=$actual"
    [ "$actual" = "$expected" ] || fail "$file does not match its SHA-256 (expected $expected, got $actual); nothing was extracted. Delete it and download it again"
    echo "sha256 ok  $file"
}

is_html() { head -c 512 "$1" | grep -qi '<html\|<!doctype html'; }

# --------------------------------------------------------------------------------------------
# Metric weights: the file list lives in core/utils/weights.py (one place for code and script).
# --------------------------------------------------------------------------------------------
weights() {
    local target=$1 dir name url
    dir=$("$PYTHON" -m core.utils.weights dir)
    "$PYTHON" -m core.utils.weights files "$target" >/dev/null || exit 1
    while read -r name url; do
        fetch "$url" "$dir/$name"
    done < <("$PYTHON" -m core.utils.weights files "$target")
    "$PYTHON" -m core.utils.weights verify "$target" || fail "a file did not match its SHA-256 (see above); it was kept for inspection: delete it and run bash download.sh $target again"
}

# --------------------------------------------------------------------------------------------
# Seasons: ComboGAN's archive holds train*/test* folders per season (exact names unverified);
# both halves of each season are merged into one domain folder, then split as in the paper.
# --------------------------------------------------------------------------------------------
combogan_domain() {  # combogan_domain FOLDER_NAME: the season of trainA_x, test_x, train3-x, ...
    local domain
    domain=$(printf '%s' "$1" | sed -E 's/^(train|test)[0-9]*[_-]*//')
    [ -n "$domain" ] || domain=$(printf '%s' "$1" | sed -E 's/^(train|test)//')
    printf '%s' "$domain"
}

merge_combogan() {  # merge_combogan UNPACKED_DIR OUT_DIR
    local src=$1 out=$2 dir name domain split count
    # Every folder name is checked before anything is copied: a domain name is a plain folder name.
    while IFS= read -r -d '' dir; do
        name=$(basename "$dir")
        domain=$(combogan_domain "$name")
        case "$domain" in
            ''|.|..|*/*|*\\*) fail "the archive's folder '$name' gives the domain name '$domain', which is not a folder name; nothing was merged" ;;
        esac
    done < <(find "$src" -mindepth 1 -maxdepth 3 -type d \( -name 'train*' -o -name 'test*' \) -print0)
    rm -rf "$out"
    while IFS= read -r -d '' dir; do
        name=$(basename "$dir")
        split=$(printf '%s' "$name" | sed -E 's/^(train|test).*/\1/')
        domain=$(combogan_domain "$name")
        mkdir -p "$out/$domain"
        count=0
        while IFS= read -r -d '' f; do
            cp "$f" "$out/$domain/${split}_$(basename "$f")"
            count=$((count + 1))
        done < <(find "$dir" -type f -print0)
        echo "  $name -> $domain ($count files)"
    done < <(find "$src" -mindepth 1 -maxdepth 3 -type d \( -name 'train*' -o -name 'test*' \) -print0 | sort -z)
    [ -d "$out" ] || fail "no train*/test* folders found in $src; arrange one folder per season by hand and run: $PYTHON main.py --mode prepare --preset seasons --raw_dir FOLDER"
}

seasons() {
    local zip=$DOWNLOADS/alps_seasons.zip
    fetch https://data.vision.ee.ethz.ch/cvl/combogan/alps_seasons.zip "$zip"
    verify "$zip" alps_seasons.zip
    rm -rf "$DOWNLOADS/alps_seasons"
    unpack "$zip" "$DOWNLOADS/alps_seasons"
    echo "merging ComboGAN's train/test folders into one folder per season:"
    merge_combogan "$DOWNLOADS/alps_seasons" "$DOWNLOADS/seasons_by_domain"
    local n
    n=$(find "$DOWNLOADS/seasons_by_domain" -mindepth 1 -maxdepth 1 -type d | wc -l)
    [ "$n" -eq 4 ] || fail "expected 4 season folders in $DOWNLOADS/seasons_by_domain, found $n; fix them by hand, then run: $PYTHON main.py --mode prepare --preset seasons --raw_dir $DOWNLOADS/seasons_by_domain"
    "$PYTHON" main.py --mode prepare --preset seasons --raw_dir "$DOWNLOADS/seasons_by_domain"
}

# --------------------------------------------------------------------------------------------
# Weather: IEEE DataPort needs a (free) login, so the archive is downloaded by hand.
# --------------------------------------------------------------------------------------------
weather_steps() {
    cat <<EOF
The Five-class Weather Image Dataset needs a (free) IEEE account, so it cannot be fetched here:
  1. Open https://ieee-dataport.org/documents/five-class-weather-image-dataset and log in.
  2. Download the dataset archive (.zip) from the page's "Dataset Files" section.
  3. Finish with:  bash download.sh weather PATH/TO/THE/ARCHIVE.zip
     (it unpacks the archive, finds the five class folders and splits them into
     data/weather/train and data/weather/val with 400 val images per class, as in the SRC paper).
EOF
}

weather() {
    if [ $# -lt 1 ]; then weather_steps; exit 0; fi
    local archive=$1 raw=$DOWNLOADS/weather_raw root
    [ -f "$archive" ] || fail "$archive is not a file"
    echo "sha256 $(sha256 "$archive")  $archive"
    rm -rf "$raw"
    unpack "$archive" "$raw"
    # the folder that holds the class folders (cloudy, foggy, rainy, snowy, sunny or clear)
    root=$(find "$raw" -type d -iname cloudy -print -quit)
    [ -n "$root" ] || fail "no 'cloudy' folder found in $archive; arrange one folder per class by hand and run: $PYTHON main.py --mode prepare --preset weather --raw_dir FOLDER"
    root=$(dirname "$root")
    echo "class folders in $root: $(find "$root" -mindepth 1 -maxdepth 1 -type d -exec basename {} \; | sort | tr '\n' ' ')"
    "$PYTHON" main.py --mode prepare --preset weather --raw_dir "$root"
}

# --------------------------------------------------------------------------------------------
# Pretrained networks
# --------------------------------------------------------------------------------------------
stargan_pretrained() {  # stargan_pretrained NAME DROPBOX_ID: downloaded aside, put in place once verified
    local file=$DOWNLOADS/stargan-v2-$1.ckpt out=expr/checkpoints/$1/100000_nets_ema.ckpt
    fetch "https://www.dropbox.com/s/$2/100000_nets_ema.ckpt?dl=1" "$file"
    verify "$file" "stargan-v2-$1.ckpt"
    mkdir -p "$(dirname "$out")"
    cp "$file" "$out"
    echo "$out"
}

gdrive() {  # gdrive FILE_ID OUT: Google Drive, including the large-file confirmation step
    fetch "https://drive.usercontent.google.com/download?id=$1&export=download&confirm=t" "$2"
    if is_html "$2"; then
        rm -f "$2"
        fail "Google Drive returned a web page instead of the file; download https://drive.google.com/file/d/$1/view by hand and put it at $2"
    fi
}

hsrc_pretrained() {  # hsrc_pretrained NAME FILE_ID: the release's file (a zip or a checkpoint; unverified)
    local out=expr/downloads/hsrc_$1.download dest=expr/checkpoints/hsrc_$1
    gdrive "$2" "$out"
    verify "$out" "hsrc_$1"
    mkdir -p "$dest"
    if "$PYTHON" -c 'import sys, zipfile; sys.exit(not zipfile.is_zipfile(sys.argv[1]))' "$out"; then
        unpack "$out" "$dest"
    else
        cp "$out" "$dest/"
    fi
    echo "Hneg_SRC $1 files in $dest:"
    find "$dest" -type f | sed 's/^/  /'
    echo "use them with --arch hsrc --preset $1-reproduce --checkpoint <the *_nets_ema.ckpt file>"
}

# --------------------------------------------------------------------------------------------
# Unpaired datasets in CUT's layout, CUT's generators, and the segmenter of the Cityscapes scores
# --------------------------------------------------------------------------------------------
untar() {  # untar TAR DEST (Python's tarfile with its 'data' filter: no absolute paths, no links out of DEST)
    mkdir -p "$2"
    "$PYTHON" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="data")' "$1" "$2" \
        || fail "$1 is not a readable tar archive (delete it and download again)"
}

cut_dataset() {  # cut_dataset NAME: what CUT's datasets/download_cut_dataset.sh NAME fetches, into data/NAME
    local zip=$DOWNLOADS/$1.zip dir
    fetch "https://efrosgans.eecs.berkeley.edu/cyclegan/datasets/$1.zip" "$zip"
    verify "$zip" "$1.zip"
    rm -rf "data/$1"
    unpack "$zip" data
    for dir in trainA trainB testA testB; do
        [ -d "data/$1/$dir" ] || fail "the archive holds no $1/$dir folder; see what it unpacked into data/"
        echo "  data/$1/$dir: $(find "data/$1/$dir" -type f | wc -l) files"
    done
}

cityscapes_steps() {
    cat <<'EOF'
Cityscapes needs a (free) account, so it cannot be fetched here. CUT's preparation, step by step:
  1. Log in at https://www.cityscapes-dataset.com and download gtFine_trainvaltest.zip and
     leftImg8bit_trainvaltest.zip (Downloads page); unzip both.
  2. This project has no command that prepares them; CUT's script does. In a clone of
     https://github.com/taesungp/contrastive-unpaired-translation run
       python datasets/prepare_cityscapes_dataset.py --gtFine_dir PATH/gtFine \
           --leftImg8bit_dir PATH/leftImg8bit --output_dir data/cityscapes
     (its help text spells the first flag --gitFine_dir; the flag is --gtFine_dir). It resizes every
     photo and every *_color.png label map to 256x256 and writes JPEGs: A = photo, B = label map;
     the official val split becomes testA/testB (500 pairs), train becomes trainA/trainB.
  3. Label -> photo is B -> A (CUT's --direction BtoA). Translations are scored against the label
     maps they came from with
       python -m metrics.cityscapes_seg --fake RESULTS/fake_B --labels RESULTS/real_A
     (its segmenter: bash download.sh drn).
CUT's own Cityscapes models were trained and scored on its resized, JPEG-compressed val set:
bash download.sh cityscapes-val-cut
EOF
}

cityscapes_val_cut() {  # the archive was not opened: its folders are listed once unpacked
    local tar=$DOWNLOADS/cityscapes_val_for_CUT.tar
    fetch http://efrosgans.eecs.berkeley.edu/CUT/datasets/cityscapes_val_for_CUT.tar "$tar"
    verify "$tar" cityscapes_val_for_CUT.tar
    untar "$tar" data/cityscapes_val_cut
    echo "unpacked into data/cityscapes_val_cut (CUT's launcher reads it as dataroot cityscapes_val, --phase val, BtoA):"
    find data/cityscapes_val_cut -mindepth 1 -maxdepth 2 -type d | sed 's/^/  /'
}

drn_steps() {
    local dir
    dir=$("$PYTHON" -m core.utils.weights dir)
    cat <<EOF
DRN's Cityscapes models are listed on a web page, not a direct download, so the file is fetched by hand:
  1. Open http://go.yf.io/drn-cityscapes-models (the Cityscapes models of github.com/fyu/drn) and
     download drn_d_22_cityscapes.pth (DRN-D-22).
  2. Finish with:  bash download.sh drn PATH/TO/drn_d_22_cityscapes.pth
     (it checks that the file loads into DRN-D-22, then copies it to $dir/),
     or copy it there yourself.
No SHA-256 is recorded for it: the file is checked by its keys and shapes when it is loaded.
Hneg_SRC's readme (github.com/jcy132/Hneg_SRC, Single-modal) links its own "drn-d-22" on Google
Drive; whether it is the same network as DRN's is not known.
EOF
}

drn() {  # drn [FILE]: the steps, or put a downloaded DRN-D-22 Cityscapes file in the weight cache
    if [ $# -lt 1 ]; then drn_steps; exit 0; fi
    local file=$1 dir
    [ -f "$file" ] || fail "$file is not a file"
    echo "sha256 $(sha256 "$file")  $file"
    "$PYTHON" -c '
import sys
from core.utils.errors import run_cli
from metrics.cityscapes_seg import build_segmenter
sys.exit(run_cli(lambda: print("loads into DRN-D-22:", sys.argv[1]) if build_segmenter(sys.argv[1]) else None))
' "$file" || fail "$file is not a DRN-D-22 Cityscapes weight file (see above); nothing was copied"
    dir=$("$PYTHON" -m core.utils.weights dir)
    mkdir -p "$dir"
    cp "$file" "$dir/drn_d_22_cityscapes.pth.part"
    mv "$dir/drn_d_22_cityscapes.pth.part" "$dir/drn_d_22_cityscapes.pth"
    echo "$dir/drn_d_22_cityscapes.pth"
}

cut_pretrained() {  # CUT's released generators (the archive was not opened: its files are listed once unpacked)
    local tar=$DOWNLOADS/cut_pretrained_models.tar dest=expr/checkpoints/cut_pretrained
    fetch http://efrosgans.eecs.berkeley.edu/CUT/pretrained_models.tar "$tar"
    verify "$tar" cut_pretrained_models.tar
    rm -rf "$dest"
    untar "$tar" "$dest"
    echo "CUT's generators in $dest (CUT's checkpoint layout: <name>/latest_net_G.pth):"
    find "$dest" -type f -name '*.pth' | sed 's/^/  /'
}

hsrc_single_modal_steps() {
    cat <<'EOF'
Hneg_SRC's one-sided (CUT setting) models are Google Drive links whose file ids are not recorded here:
  1. Open https://github.com/jcy132/Hneg_SRC/tree/main/Single-modal and download, from the links
     at the top of its readme, "horse-to-zebra" and "Cityscapes" (also "Monet", "drn-d-22").
  2. Unpack them into expr/checkpoints/. Expected (from its test commands; the archives were not
     opened): h2z-best/best_net_G.pth and city-best/best_net_G.pth (tested with --epoch best),
     monet-best/latest_net_G.pth. The generators are CUT's resnet_9blocks.
  3. Its "drn-d-22" goes in the weight cache: bash download.sh drn PATH/TO/THE/FILE
EOF
}

# --------------------------------------------------------------------------------------------
[ $# -ge 1 ] || { usage; exit 0; }
target=$1
shift
case "$target" in
    metric-weights|vgg16) weights "$target" ;;
    seasons) seasons ;;
    weather) weather "$@" ;;
    synthetic-seasons) "$PYTHON" -m core.data.synthetic seasons --out data/synthetic-seasons ;;
    synthetic-weather) "$PYTHON" -m core.data.synthetic weather --out data/synthetic-weather ;;
    pretrained-stargan-v2-celeba-hq|pretrained-network-celeba-hq)
        fail "$target is not offered: the official CelebA-HQ network needs --w_hpf 1 (FAN face masks and the high-pass skips), which this code does not implement" ;;
    pretrained-stargan-v2-afhq|pretrained-network-afhq)
        stargan_pretrained afhq etwm810v25h42sn
        echo "use it with: python main.py --mode sample --num_domains 3 --resume_iter 100000 --checkpoint_dir expr/checkpoints/afhq ..." ;;
    pretrained-hsrc-seasons) hsrc_pretrained seasons 1885ZJk4wFI5UKWW_o-2seF8vkMu1jXGt ;;
    pretrained-hsrc-weather) hsrc_pretrained weather 106Y5ssK5WickKsttPYhZgx8OtYYSkLOy ;;
    pretrained-cut) cut_pretrained ;;
    pretrained-hsrc-single-modal) hsrc_single_modal_steps ;;
    drn) drn "$@" ;;
    horse2zebra) cut_dataset horse2zebra ;;
    cityscapes) cityscapes_steps ;;
    cityscapes-val-cut) cityscapes_val_cut ;;
    celeba-hq-dataset)
        fetch "https://www.dropbox.com/s/f7pvjij2xlpff59/celeba_hq.zip?dl=1" "$DOWNLOADS/celeba_hq.zip"
        verify "$DOWNLOADS/celeba_hq.zip" celeba_hq.zip
        unpack "$DOWNLOADS/celeba_hq.zip" data ;;
    afhq-dataset)
        fetch "https://www.dropbox.com/s/t9l9o3vsx2jai3z/afhq.zip?dl=1" "$DOWNLOADS/afhq.zip"
        verify "$DOWNLOADS/afhq.zip" afhq.zip
        unpack "$DOWNLOADS/afhq.zip" data ;;
    afhq-v2-dataset)
        fetch "https://www.dropbox.com/s/vkzjokiwof5h8w6/afhq_v2.zip?dl=1" "$DOWNLOADS/afhq_v2.zip"
        verify "$DOWNLOADS/afhq_v2.zip" afhq_v2.zip
        unpack "$DOWNLOADS/afhq_v2.zip" data ;;
    -h|--help|help) usage ;;
    *) echo "error: unknown target '$target'" >&2; usage >&2; exit 1 ;;
esac
