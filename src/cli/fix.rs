//! `imgcheck fix`.

use anyhow::{Context, Result};

use crate::{install_cancel_handler, Command, EXIT_ERROR, EXIT_OK};
use imgcheck::convert::{self, ConvertOptions};
use imgcheck::image;

/// `imgcheck fix`: plan on SRC, write SRC-with-repairs to DST, verify DST.
pub fn run(cmd: Command) -> Result<u8> {
    let Command::Fix {
        output_format,
        dry_run,
        format,
        force,
        only,
        open,
        src,
        dst,
    } = cmd
    else {
        unreachable!("fix::run is called for the fix command")
    };
    let (src, dst) = (src.as_str(), dst.as_deref());
    use imgcheck::checks::verify::{verify, VerifyOptions};
    let json = match format.as_str() {
        "json" => true,
        "text" => false,
        f => anyhow::bail!("--format {f}: use text or json"),
    };
    let dev = image::open_spec(src, &open.options())?;
    let plan = imgcheck::repair::fix::plan(&dev, &only).with_context(|| format!("fix {src}"))?;
    let mut out = serde_json::json!({ "image": src, "plan": &plan, "dry_run": dry_run });
    let mut code = EXIT_OK;
    if !dry_run {
        let dst =
            dst.ok_or_else(|| anyhow::anyhow!("fix: give a destination file (or --dry-run)"))?;
        let opts = ConvertOptions {
            format: output_format.parse()?,
            options: Vec::new(),
            compress: false,
            jobs: 0,
            force,
            cache: "writeback".parse()?,
            protect: Vec::new(),
        };
        install_cancel_handler();
        let fixed = plan.apply(dev.clone())?;
        convert::convert(fixed, dst, &opts, &|_| {})
            .with_context(|| format!("fix: writing {}", dst.display()))?;
        let report = verify(&dst.display().to_string(), &VerifyOptions::default());
        code = match report.verdict {
            imgcheck::checks::Verdict::Pass => EXIT_OK,
            imgcheck::checks::Verdict::Fail => 1,
            _ => EXIT_ERROR,
        };
        out["destination"] = serde_json::json!(dst.display().to_string());
        out["verify"] = serde_json::to_value(&report)?;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(code);
    }
    if plan.repairs.is_empty() {
        println!("{src}: nothing to repair");
    }
    for r in &plan.repairs {
        println!(
            "{} {}: {} ({})",
            if dry_run { "would repair" } else { "repaired" },
            r.key,
            r.change,
            r.check
        );
    }
    for n in &plan.not_repairable {
        println!("not repairable: {}: {}", n.check, n.why);
    }
    if let Some(v) = out.get("verify") {
        println!(
            "{}: verify after the repairs: {}",
            out["destination"].as_str().unwrap_or(""),
            v["verdict"].as_str().unwrap_or("?")
        );
    }
    Ok(code)
}
