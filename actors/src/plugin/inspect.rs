//! Reading a plugin's header from the file, without loading it: what `hsu check` does. Opening
//! a library runs its initialisers; a check must not run anything. The ELF file is parsed (the
//! `object` crate), the header symbol found among its dynamic symbols, and its fields read from
//! the file, following the relocations that fill in its string pointers at load time.

use std::path::Path;

use hsu_module::plugin::{PluginHeader, HEADER_SYMBOL};
use object::{Object, ObjectSection, ObjectSymbol};

use super::{check_prefix, check_versions, PluginError};

/// What the header says, read from the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderFacts {
    /// The plugin's ABI version.
    pub abi_version: u32,
    /// The hsu-module version it was built against.
    pub crate_version: String,
    /// The target it was built for.
    pub target: String,
}

/// Checks that `path` is a shared library of this host's architecture with a compatible hsu
/// plugin header, reading the file only.
///
/// # Errors
/// The same [`PluginError`]s a load would give for the header, and `Open` for a file that is
/// not a shared library of this architecture.
pub fn inspect(path: &Path) -> Result<HeaderFacts, PluginError> {
    let open = |reason: String| PluginError::Open {
        path: path.to_path_buf(),
        reason,
    };
    let data = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => PluginError::NotFound {
            path: path.to_path_buf(),
        },
        _ => open(e.to_string()),
    })?;
    inspect_bytes(path, &data)
}

/// [`inspect`] of a file's contents (`path` only names it in errors): what the fuzz target
/// and the property tests drive with hostile bytes.
///
/// # Errors
/// As [`inspect`].
pub fn inspect_bytes(path: &Path, data: &[u8]) -> Result<HeaderFacts, PluginError> {
    let open = |reason: String| PluginError::Open {
        path: path.to_path_buf(),
        reason,
    };
    let file = object::File::parse(data).map_err(|e| open(format!("not a shared library: {e}")))?;
    if file.kind() != object::ObjectKind::Dynamic {
        return Err(open(format!(
            "not a shared library (an ELF file of kind {:?})",
            file.kind()
        )));
    }
    let host = host_architecture();
    if Some(file.architecture()) != host || !file.is_64() {
        return Err(open(format!(
            "built for {:?}, this host is {}",
            file.architecture(),
            std::env::consts::ARCH
        )));
    }
    let symbol = file
        .dynamic_symbols()
        .find(|s| s.name() == Ok(HEADER_SYMBOL))
        .ok_or(PluginError::MissingSymbol {
            path: path.to_path_buf(),
            symbol: HEADER_SYMBOL,
        })?;
    let at = symbol.address();
    let size = std::mem::size_of::<PluginHeader>() as u64;
    let bytes = read(&file, at, size).ok_or_else(|| {
        open(format!(
            "`{HEADER_SYMBOL}` is not in the file's data (a {size}-byte header at {at:#x})"
        ))
    })?;
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap_or_default());
    let mut magic = [0u8; 8];
    magic.copy_from_slice(&bytes[..8]);
    check_prefix(path, magic, u32_at(8), u32_at(12))?;
    // `RStr`s at 16 (crate version), 32 (rustc), 48 (target): a pointer and a length each.
    let text = |offset: u64| -> Result<String, PluginError> {
        let pointer = relocated(&file, at + offset).or_else(|| {
            read(&file, at + offset, 8)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
        });
        let len = read(&file, at + offset + 8, 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
        match (pointer, len) {
            (Some(p), Some(len)) if len <= 4096 => read(&file, p, len)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .ok_or_else(|| open(format!("a header string points outside the file ({p:#x})"))),
            _ => Err(open("the header's strings cannot be read".into())),
        }
    };
    let crate_version = text(16)?;
    let target = text(48)?;
    check_versions(path, &crate_version, &target)?;
    Ok(HeaderFacts {
        abi_version: u32_at(8),
        crate_version,
        target,
    })
}

fn host_architecture() -> Option<object::Architecture> {
    use object::Architecture::*;
    Some(match std::env::consts::ARCH {
        "x86_64" => X86_64,
        "aarch64" => Aarch64,
        "riscv64" => Riscv64,
        "powerpc64" => PowerPc64,
        "s390x" => S390x,
        "loongarch64" => LoongArch64,
        _ => return None,
    })
}

/// `len` bytes at virtual address `at`, from the section holding them in the file.
fn read(file: &object::File<'_>, at: u64, len: u64) -> Option<Vec<u8>> {
    file.sections().find_map(|section| {
        let start = section.address();
        let end = start.checked_add(section.size())?;
        if at < start || at.checked_add(len)? > end {
            return None;
        }
        let data = section.data().ok()?;
        let from = usize::try_from(at - start).ok()?;
        let to = from.checked_add(usize::try_from(len).ok()?)?;
        data.get(from..to).map(<[u8]>::to_vec)
    })
}

/// The value the loader writes at `at` (a relative relocation's addend), if one does.
fn relocated(file: &object::File<'_>, at: u64) -> Option<u64> {
    file.dynamic_relocations()?
        .find_map(|(offset, relocation)| (offset == at).then(|| relocation.addend() as u64))
}
