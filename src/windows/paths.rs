//! Driver file paths: where the file a service's ImagePath names lives on the Windows
//! volume. ImagePath comes in many spellings (relative to SystemRoot, `\SystemRoot\`,
//! `%windir%`, `\??\C:\`, absent); the checks need one path relative to the volume root to
//! ask the file system whether the driver is really there.

/// The Windows directory relative to the volume root ("Windows") from SystemRoot
/// ("C:\\Windows"); "Windows" when unknown.
pub fn windows_dir(system_root: Option<&str>) -> String {
    let r = system_root.unwrap_or("C:\\Windows").trim();
    let r = strip_drive(r);
    let r = r.trim_matches(['\\', '/']);
    if r.is_empty() {
        "Windows".into()
    } else {
        r.replace('\\', "/")
    }
}

fn strip_drive(p: &str) -> &str {
    let b = p.as_bytes();
    if b.len() >= 2 && b[1] == b':' && b[0].is_ascii_alphabetic() {
        &p[2..]
    } else {
        p
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    if s.len() >= prefix.len() && s.is_char_boundary(prefix.len()) {
        let (a, b) = s.split_at(prefix.len());
        if a.eq_ignore_ascii_case(prefix) {
            return Some(b);
        }
    }
    None
}

/// Normalises a driver's ImagePath to a path relative to the Windows volume root with `/`
/// separators, e.g. "Windows/System32/drivers/viostor.sys". Forms handled:
/// `system32\drivers\x.sys` (relative to SystemRoot), `\SystemRoot\...`, `%SystemRoot%\...`,
/// `%windir%\...`, `\??\C:\...`, `C:\...`, `\Windows\...` (volume root), and absent (the
/// default `System32\drivers\<service>.sys`). Quotes around the path are removed. The file
/// system is case-insensitive: the caller should compare paths that way.
pub fn driver_file_path(
    image_path: Option<&str>,
    service: &str,
    system_root: Option<&str>,
) -> String {
    let windir = windows_dir(system_root);
    let Some(p) = image_path.map(str::trim).filter(|p| !p.is_empty()) else {
        return format!("{windir}/System32/drivers/{service}.sys");
    };
    let p = p.trim_matches('"');
    let rel = if let Some(r) = strip_prefix_ci(p, "\\SystemRoot\\") {
        format!("{windir}\\{r}")
    } else if let Some(r) = strip_prefix_ci(p, "%SystemRoot%\\") {
        format!("{windir}\\{r}")
    } else if let Some(r) = strip_prefix_ci(p, "%windir%\\") {
        format!("{windir}\\{r}")
    } else if let Some(r) = p.strip_prefix("\\??\\") {
        strip_drive(r).trim_start_matches('\\').to_string()
    } else if strip_drive(p).len() != p.len() {
        strip_drive(p).trim_start_matches('\\').to_string()
    } else if let Some(r) = p.strip_prefix('\\') {
        r.to_string()
    } else {
        format!("{windir}\\{p}")
    };
    rel.replace('\\', "/")
}
