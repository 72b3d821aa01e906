//! `tenantdb crd`: the CRDs, generated from the Rust types.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

pub fn run(output_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    match output_dir {
        None => print!("{}", tenantdb::api::crds_yaml()?),
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            for (name, yaml) in tenantdb::api::crd_files()? {
                let path = dir.join(name);
                std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
                println!("wrote {}", path.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
