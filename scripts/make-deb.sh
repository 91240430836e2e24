#!/usr/bin/env bash
# Builds allot_VERSION_ARCH.deb from a staged `make install` tree (make deb runs it):
#   scripts/make-deb.sh STAGE_DIR VERSION OUT_DIR
# What Debian's helpers would do, done with Debian's own tools (dpkg-deb, dpkg-shlibdeps' data through
# dpkg-query, deb-systemd-helper and deb-systemd-invoke in the maintainer scripts, as dh_installsystemd
# writes them): binaries stripped, man pages and changelog compressed, /etc/allot/allotd.toml a conffile,
# sysusers and tmpfiles applied in postinst, the units enabled and started on install (restarted on
# upgrade: running jobs survive, allotd adopts them), stopped on remove, config and state kept until purge.
set -euo pipefail
missing=()
for tool in dpkg-deb strip readelf chrpath file gzip; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
    echo "make deb needs: ${missing[*]} (apt-get install dpkg binutils chrpath file gzip)" >&2
    exit 1
fi
stage=$1
version=$2
out=$3
arch=$(dpkg --print-architecture)
pkg=allot
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
cp -a "$stage"/. "$root"/
doc=$root/usr/share/doc/$pkg

# Binaries: stripped (lintian: unstripped-binary-or-object), without the toolchain's RUNPATH (the Swift
# runtime is linked in statically: nothing is loaded from /opt/swift).
for b in "$root"/usr/bin/*; do
    if ldd "$b" 2>/dev/null | grep -q libswift; then
        echo "$b loads the Swift runtime: build with --static-swift-stdlib (make release)" >&2
        exit 1
    fi
    if file -b "$b" | grep -q ELF; then
        strip --strip-unneeded --remove-section=.comment --remove-section=.note "$b"
        if readelf -d "$b" 2>/dev/null | grep -q -E 'RUNPATH|RPATH'; then chrpath -d "$b" >/dev/null; fi
    fi
done
# The shell runs completions by sourcing them: no #! line (lintian: bash-completion-with-hashbang).
sed -i '1{/^#!/d}' "$root/usr/share/bash-completion/completions/allotctl"
# Man pages: argument-parser's leave empty lines, which groff reads as blank output lines.
sed -i '/^$/d' "$root"/usr/share/man/man1/*.1
# allotctl-full is allotctl's full command (allotctl runs a plain submit itself and execs it for the rest);
# allot-supervise is the job supervisor allotd starts for each run.
ln -s allotctl.1.gz "$root/usr/share/man/man1/allotctl-full.1.gz"
mkdir -p "$root/usr/share/man/man8"
cat > "$root/usr/share/man/man8/allot-supervise.8" <<'EOF'
.TH ALLOT-SUPERVISE 8 "" "allot" "System Administration"
.SH NAME
allot-supervise \- the supervisor of one run of an allot job
.SH SYNOPSIS
.B allot-supervise
.I RUN_DIRECTORY
.SH DESCRIPTION
.B allotd
starts one
.B allot-supervise
for each run of a job, on the node that runs it. It reads the run's spec from
.IR RUN_DIRECTORY /spec,
makes the job's cgroup, starts the command in it as the job's owner, relays an interactive run's
terminal, writes how the run ended to
.IR RUN_DIRECTORY /status
and tells allotd. It is not meant to be run by hand.
.SH SEE ALSO
.BR allotd (1),
.BR allotctl (1)
EOF
# Man pages and docs compressed, reproducibly; the example config lives in /etc only once (a conffile).
find "$root/usr/share/man" -type f -name '*.[0-9]' -exec gzip -9n {} +

rm -f "$doc"/allotd.toml.example
find "$doc" -type f -name '*.md' -size +4k -exec gzip -9n {} +
# The changelog and copyright Debian policy asks for.
cat > "$root/changelog.Debian" <<EOF
$pkg ($version) unstable; urgency=medium

  * Built from the allot source tree (make deb).

 -- allot maintainers <maintainers@allot-scheduler.org>  $(date -R -d @"${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")
EOF
gzip -9n -c "$root/changelog.Debian" > "$doc/changelog.gz"
rm "$root/changelog.Debian"
cat > "$doc/copyright" <<'EOF'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: allot
Source: https://github.com/allot/allot

Files: *
Copyright: 2026 The allot authors
License: Apache-2.0
 On Debian systems, the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
EOF
# Lintian's notes on what is meant.
mkdir -p "$root/usr/share/lintian/overrides"
cat > "$root/usr/share/lintian/overrides/$pkg" <<'EOF'
# The Swift runtime and Foundation are linked in statically: Debian ships no Swift runtime package.
allot: embedded-library *
# allotd runs jobs as their owners from root (setuid happens in allot-supervise, not by file mode), and its
# unit keeps the hardening a job launcher can keep (docs/operations.md, "The unit").
allot: systemd-service-file-missing-hardening-features *
# allotctl (the front that answers a plain submit in a few milliseconds) and allot-supervise (started for
# every run) are static executables on purpose: no dynamic loader, no libraries to map at each start.
allot: statically-linked-binary [usr/bin/allotctl]
allot: statically-linked-binary [usr/bin/allot-supervise]
EOF

# Dependencies: the shared libraries the binaries load, by package (what dpkg-shlibdeps works out).
deps=$(for b in "$root"/usr/bin/*; do
    ldd "$b" 2>/dev/null | awk '/=> \//{print $3}'
done | sort -u | while read -r lib; do
    dpkg-query -S "$(readlink -f "$lib")" 2>/dev/null || dpkg-query -S "$lib" 2>/dev/null || true
done | cut -d: -f1 | sort -u | while read -r p; do
    v=$(dpkg-query -W -f='${Version}' "$p" | sed 's/-[^-]*$//')
    echo "$p (>= $v)"
done | paste -sd, | sed 's/,/, /g')

mkdir -p "$root/DEBIAN"
size=$(du -k -s --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<EOF
Package: $pkg
Version: $version
Architecture: $arch
Maintainer: allot maintainers <maintainers@allot-scheduler.org>
Installed-Size: $size
Depends: ${deps:-libc6}, systemd
Section: admin
Priority: optional
Homepage: https://github.com/allot/allot
Description: GPU pool scheduler for training and inference
 allot shares a pool of GPUs between training runs and inference services:
 allotd schedules by priority and cost, writes every decision to a
 write-ahead log before acting, runs the jobs as their owners (here or
 through node agents) and explains every decision; allotctl submits,
 watches (ls, why, top) and simulates traces.
EOF
echo /etc/allot/allotd.toml > "$root/DEBIAN/conffiles"

units="allotd.socket allotd.service"
cat > "$root/DEBIAN/postinst" <<EOF
#!/bin/sh
set -e
if [ "\$1" = configure ] || [ "\$1" = abort-upgrade ] || [ "\$1" = abort-deconfigure ] || [ "\$1" = abort-remove ]; then
	systemd-sysusers /usr/lib/sysusers.d/allot.conf || true
	systemd-tmpfiles --create /usr/lib/tmpfiles.d/allot.conf || true
	for unit in $units; do
		# Enabled on first install, as dh_installsystemd does; an admin's disable is kept on upgrade.
		if deb-systemd-helper --quiet was-enabled "\$unit"; then
			deb-systemd-helper enable "\$unit" >/dev/null || true
		else
			deb-systemd-helper update-state "\$unit" >/dev/null || true
		fi
	done
	if [ -d /run/systemd/system ]; then
		systemctl --system daemon-reload >/dev/null || true
		if [ -n "\$2" ]; then
			# An upgrade: allotd restarts on the new binary and adopts the running jobs.
			deb-systemd-invoke restart $units >/dev/null || true
		else
			deb-systemd-invoke start $units >/dev/null || true
		fi
	fi
fi
EOF
cat > "$root/DEBIAN/prerm" <<EOF
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "\$1" = remove ]; then
	deb-systemd-invoke stop allotd.service allotd.socket allotd-agent.service >/dev/null || true
fi
EOF
cat > "$root/DEBIAN/postrm" <<EOF
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null || true
fi
if [ "\$1" = remove ]; then
	if command -v deb-systemd-helper >/dev/null 2>&1; then
		deb-systemd-helper mask $units allotd-agent.service >/dev/null || true
	fi
fi
if [ "\$1" = purge ]; then
	if command -v deb-systemd-helper >/dev/null 2>&1; then
		deb-systemd-helper purge $units allotd-agent.service >/dev/null || true
		deb-systemd-helper unmask $units allotd-agent.service >/dev/null || true
	fi
	# The operator's data: the log and state, job logs, and the configuration directory.
	rm -rf /var/lib/allot /var/lib/allot-agent /etc/allot
fi
EOF
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) > "$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums" "$root/DEBIAN/control" "$root/DEBIAN/conffiles"
find "$root" -type d -exec chmod 0755 {} +
mkdir -p "$out"
deb="$out/${pkg}_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
