//! The `conftag submit …` argv the CLI and pipeline tests build, in one place: the same
//! flags were spelled out by hand in five test files.

/// `submit --model MODEL --dataset DATASET` and then the flags added in order.
///
/// ```
/// let submit = testkit::Submit::new("m", "boolq").split("test").shard_size(2);
/// assert_eq!(
///     submit.args(),
///     ["submit", "--model", "m", "--dataset", "boolq", "--split", "test", "--shard-size", "2"]
/// );
/// ```
#[derive(Debug, Clone)]
pub struct Submit {
    argv: Vec<String>,
}

impl Submit {
    pub fn new(model: &str, datasets: &str) -> Self {
        Self::model(model).dataset(datasets)
    }

    /// `submit --model MODEL` alone (add [`dataset`](Self::dataset) or
    /// [`dataset_spec`](Self::dataset_spec)).
    pub fn model(model: &str) -> Self {
        Self {
            argv: ["submit", "--model", model].map(str::to_owned).into(),
        }
    }

    /// `--dataset DATASETS` (comma-separated names).
    pub fn dataset(self, datasets: &str) -> Self {
        self.flag("--dataset", datasets)
    }

    /// `--dataset-spec PATH`
    pub fn dataset_spec(self, path: impl AsRef<std::ffi::OsStr>) -> Self {
        let p = path.as_ref().to_string_lossy().into_owned();
        self.flag("--dataset-spec", &p)
    }

    /// `--split SPLIT`
    pub fn split(self, split: &str) -> Self {
        self.flag("--split", split)
    }

    /// `--data SPEC` (a path, or `DATASET=PATH`); repeatable.
    pub fn data(self, data: impl AsRef<std::ffi::OsStr>) -> Self {
        let d = data.as_ref().to_string_lossy().into_owned();
        self.flag("--data", &d)
    }

    /// `--shard-size N`
    pub fn shard_size(self, n: u64) -> Self {
        self.flag("--shard-size", &n.to_string())
    }

    /// `--max-tokens N`
    pub fn max_tokens(self, n: u64) -> Self {
        self.flag("--max-tokens", &n.to_string())
    }

    /// `--judge-mode MODE`
    pub fn judge_mode(self, mode: &str) -> Self {
        self.flag("--judge-mode", mode)
    }

    /// `--json`
    pub fn json(self) -> Self {
        self.arg("--json")
    }

    /// `FLAG VALUE`
    pub fn flag(self, flag: &str, value: &str) -> Self {
        self.arg(flag).arg(value)
    }

    /// Any other argument.
    pub fn arg(mut self, a: &str) -> Self {
        self.argv.push(a.to_owned());
        self
    }

    /// Other arguments, in order.
    pub fn extra(mut self, args: &[&str]) -> Self {
        self.argv.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// The argv (without the program name and the global flags).
    pub fn args(&self) -> Vec<&str> {
        self.argv.iter().map(String::as_str).collect()
    }
}
