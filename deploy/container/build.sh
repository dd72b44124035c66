#!/usr/bin/env bash
# Builds the raftlb container image FROM scratch: the binary, nft (the VIP
# fence) and exactly the shared libraries they load (ldd), /etc/passwd with
# the non-root user raftlb (65532), and an empty data dir and certificate
# dir (/var/lib/raftlb, /etc/raftlb/pki) it owns. The
# binary is permitted CAP_NET_ADMIN, CAP_NET_RAW and CAP_NET_BIND_SERVICE
# (file capabilities `+p`: `raftlb run` raises them itself, and the binary
# still starts where they are withheld), nft is given CAP_NET_ADMIN, so the
# non-root user manages VIPs when the container has those capabilities and
# no others: --cap-drop ALL --cap-add NET_ADMIN --cap-add NET_RAW
# --cap-add NET_BIND_SERVICE. (File capabilities are ignored under
# no-new-privileges.) Debug symbols are stripped from the copy.
#
# Usage: deploy/container/build.sh [BINARY]   (default: target/release/raftlb)
#        IMAGE=raftlb:dev deploy/container/build.sh target/debug/raftlb
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
binary=${1:-$here/../../target/release/raftlb}
image=${IMAGE:-raftlb:latest}
[ -x "$binary" ] || { echo "no raftlb binary at $binary (cargo build --release -p raftlb-node)" >&2; exit 1; }
for tool in docker nft setcap ldd objcopy tar; do
  command -v "$tool" >/dev/null || { echo "build.sh needs $tool" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root"/usr/local/bin "$root"/usr/sbin "$root"/etc/raftlb/pki "$root"/var/lib/raftlb "$root"/tmp

objcopy --strip-debug "$binary" "$root/usr/local/bin/raftlb"
cp "$(command -v nft)" "$root/usr/sbin/nft"
# Every shared library either loads, at the path the loader looks for it.
for exe in "$root/usr/local/bin/raftlb" "$root/usr/sbin/nft"; do
  ldd "$exe" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'
done | sort -u | while read -r lib; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done

cat > "$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/:/nonexistent
raftlb:x:65532:65532:raftlb:/var/lib/raftlb:/nonexistent
PASSWD
cat > "$root/etc/group" <<'GROUP'
root:x:0:
raftlb:x:65532:
GROUP
# A new named volume mounted on either starts with its owner and mode.
chown 65532:65532 "$root/var/lib/raftlb" "$root/etc/raftlb/pki"
chmod 0700 "$root/var/lib/raftlb" "$root/etc/raftlb/pki"
chmod 1777 "$root/tmp"
setcap cap_net_admin,cap_net_raw,cap_net_bind_service+p "$root/usr/local/bin/raftlb"
setcap cap_net_admin+ep "$root/usr/sbin/nft"

# A tar keeps the capabilities (extended attributes) that a COPY may drop.
tar --xattrs --xattrs-include='security.capability' --numeric-owner -C "$root" -cf "$work/rootfs.tar" .
cp "$here/Dockerfile" "$work/Dockerfile"
DOCKER_BUILDKIT=0 docker build --quiet -t "$image" "$work" >/dev/null
size=$(docker image inspect "$image" --format '{{.Size}}')
echo "built $image: $((size / 1000000)) MB ($(du -h "$root/usr/local/bin/raftlb" | cut -f1) binary)"
