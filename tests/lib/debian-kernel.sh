# SPDX-License-Identifier: MIT
#
# Sourced (bash) by the scripts that boot test guests with kernel modules
# (tests/rdma/run-in-rxe-vm.sh, tests/e2e/balloon-guest.sh, disk-guest.sh): turns a Debian
# kernel package into a small cache directory, and orders its modules for
# loading. A whole linux-image package is ~400 MB of modules; a guest needs
# a handful, so only the closure of the wanted modules over their declared
# dependencies is kept. The cache directory holds:
#   vmlinuz, config, kver     the kernel, its configuration, its version
#   modules/NAME.ko           every kept module, decompressed
#   deps                      one line per kept module: "NAME DEP DEP ..."
#   builtin                   the package's modules.builtin
#   wanted                    the module names asked for
#   ready                     written last: the directory is complete

# kernel_extract PKG DIR MODULE...: downloads PKG with apt-get download (no
# install, no root needed beyond the cache directory) and fills DIR as
# above. A wanted module the package neither ships nor builds in is left
# out; kernel_has_module tells the caller. Returns 0, or 1 with the reason
# on stderr.
kernel_extract() {
	local pkg=$1 dir=$2 tmp deb vmlinuz kver mroot m f deps err
	shift 2
	tmp=$(mktemp -d "$(dirname "$dir")/.fetch.XXXXXX") || return 1
	# apt drops privileges to _apt for the download; let it write here.
	chmod 0777 "$tmp"
	if ! (cd "$tmp" && apt-get download -q "$pkg" >/dev/null 2>"$tmp/apt.err"); then
		err=$(tail -n2 "$tmp/apt.err"); rm -rf "$tmp"
		echo "apt-get download $pkg failed: $err" >&2
		return 1
	fi
	deb=$(ls "$tmp"/*.deb)
	mkdir "$tmp/x"
	dpkg-deb -x "$deb" "$tmp/x" || { rm -rf "$tmp"; echo "dpkg-deb -x $deb failed" >&2; return 1; }
	vmlinuz=$(ls "$tmp"/x/boot/vmlinuz-* 2>/dev/null | head -n1)
	[[ -n $vmlinuz ]] || { rm -rf "$tmp"; echo "$pkg has no /boot/vmlinuz-*" >&2; return 1; }
	kver=${vmlinuz##*/vmlinuz-}
	mroot=$tmp/x/lib/modules/$kver
	mkdir -p "$tmp/keep/modules"
	cp "$vmlinuz" "$tmp/keep/vmlinuz"
	cp "$tmp/x/boot/config-$kver" "$tmp/keep/config" 2>/dev/null || true
	cp "$mroot/modules.builtin" "$tmp/keep/builtin" 2>/dev/null || : >"$tmp/keep/builtin"
	echo "$kver" >"$tmp/keep/kver"
	find "$mroot/kernel" -name '*.ko*' | while read -r f; do
		local b=${f##*/}; echo "${b%%.ko*} $f"
	done >"$tmp/index"
	local -A seen=()
	local queue=("$@")
	: >"$tmp/keep/deps"
	while ((${#queue[@]})); do
		m=${queue[0]//-/_}; queue=("${queue[@]:1}")
		[[ -n ${seen[$m]:-} ]] && continue
		seen[$m]=1
		f=$(awk -v m="$m" '$1 == m { print $2; exit }' "$tmp/index")
		[[ -n $f ]] || continue # built in, or not in this package at all
		case "$f" in
		*.ko) cp "$f" "$tmp/keep/modules/$m.ko" ;;
		*.ko.xz) xz -dc "$f" >"$tmp/keep/modules/$m.ko" ;;
		*.ko.zst) zstd -qdc "$f" >"$tmp/keep/modules/$m.ko" ;;
		*.ko.gz) gzip -dc "$f" >"$tmp/keep/modules/$m.ko" ;;
		*) rm -rf "$tmp"; echo "unknown module format $f" >&2; return 1 ;;
		esac
		deps=$(tr '\0' '\n' <"$tmp/keep/modules/$m.ko" | sed -n 's/^depends=//p' | head -n1)
		echo "$m ${deps//,/ }" >>"$tmp/keep/deps"
		queue+=(${deps//,/ })
	done
	echo "$*" >"$tmp/keep/wanted"
	touch "$tmp/keep/ready"
	rm -rf "$dir"
	mv "$tmp/keep" "$dir"
	rm -rf "$tmp"
}

# kernel_has_module DIR NAME: true when the kernel in DIR can have NAME
# (kept as a module or built in).
kernel_has_module() {
	[[ -e $1/modules/$2.ko ]] || grep -q "/$2.ko" "$1/builtin" 2>/dev/null
}

# kernel_module_order DIR MODULE...: prints the kept modules among MODULE...
# and their dependencies in load order: depth-first over deps, the given
# order for independent modules.
kernel_module_order() {
	local kdir=$1 name rest
	shift
	local -A deps=() done_=()
	while read -r name rest; do deps[$name]=$rest; done <"$kdir/deps"
	_kernel_visit() {
		local m=$1 d
		[[ -n ${done_[$m]:-} || -z ${deps[$m]+x} ]] && return 0
		done_[$m]=1
		for d in ${deps[$m]}; do _kernel_visit "$d"; done
		echo "$m"
	}
	for name in "$@"; do _kernel_visit "$name"; done
}

# kernel_fetch CACHE MODULE...: the cache directory of the kernel that
# linux-image-cloud-amd64 depends on now, with MODULE... kept (filled on
# first use); without apt metadata, the newest complete one already in
# CACHE. Prints the directory. Exits through die (the caller's) on failure.
kernel_fetch() {
	local cache=$1 meta=linux-image-cloud-amd64 pkg dir m
	shift
	pkg=$(apt-cache depends "$meta" 2>/dev/null | sed -n 's/^ *Depends: *\(linux-image-[0-9][^ ]*\).*/\1/p' | head -n1)
	if [[ -z $pkg ]]; then
		dir=$(ls -d "$cache"/kernel-*/ 2>/dev/null | sort -V | tail -n1 || true)
		[[ -n $dir && -e $dir/ready ]] && { echo "${dir%/}"; return 0; }
		die "cannot resolve the package $meta depends on (run apt-get update) and nothing is cached in $cache"
	fi
	dir=$cache/kernel-$pkg
	[[ -e $dir/ready ]] && { echo "$dir"; return 0; }
	say "fetching $pkg into $dir"
	kernel_extract "$pkg" "$dir" "$@" || die "cannot extract $pkg"
	for m in "$@"; do
		kernel_has_module "$dir" "$m" || die "module $m neither built into $pkg nor shipped by it"
	done
	echo "$dir"
}
