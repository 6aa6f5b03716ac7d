//! The OCR graphs as tract sessions. A graph whose sides tract can keep symbolic is planned once; one
//! it cannot analyse that way (the DB detector: its FPN upsamples `ceil(h/32)` maps and concatenates
//! them with `ceil(h/16)` ones, which tract cannot prove equal for a symbolic `h`) is planned per input
//! shape, the most recent few kept.

use std::path::{Path, PathBuf};

use crate::engine::session::{Dim, ElemType, InputSpec, Session, SessionOptions, Value};
use crate::error::Result;

/// Plans kept per graph when planning per shape (a camera's frames all have one shape; `lookout read`
/// over a folder of photos of a few sizes re-plans rarely).
const KEEP: usize = 4;

pub struct Graph {
    path: PathBuf,
    opts: SessionOptions,
    symbolic: Option<Session>,
    planned: Vec<(Vec<usize>, Session)>,
}

impl Graph {
    /// Loads `path` with input `x` shaped `dims`; falls back to per-shape plans when tract cannot
    /// analyse the symbolic shape (any other load error is returned).
    pub fn load(path: &Path, dims: Vec<Dim>, opts: &SessionOptions) -> Result<Graph> {
        let spec = vec![InputSpec::new("x", ElemType::F32, dims)];
        let symbolic = match Session::load(path, &spec, opts) {
            Ok(s) => Some(s),
            Err(e) if e.to_string().contains("cannot analyse") => {
                log::info!("{}: planned per input shape ({e})", path.display());
                None
            }
            Err(e) => return Err(e),
        };
        let mut g = Graph {
            path: path.to_path_buf(),
            opts: opts.clone(),
            symbolic,
            planned: Vec::new(),
        };
        if g.symbolic.is_none() {
            // fail now, not at the first image, when the file is not a graph tract can run at all
            let probe: Vec<usize> = (0..4).map(|i| if i == 1 { 3 } else { 32 }).collect();
            g.session(&probe)?;
        }
        Ok(g)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn session(&mut self, shape: &[usize]) -> Result<&Session> {
        match self.symbolic {
            Some(ref s) => Ok(s),
            None => self.planned(shape),
        }
    }

    /// The plan for exactly this shape, made (and the oldest dropped) when not kept.
    fn planned(&mut self, shape: &[usize]) -> Result<&Session> {
        if let Some(i) = self.planned.iter().position(|(s, _)| s == shape) {
            let hit = self.planned.remove(i);
            self.planned.push(hit);
        } else {
            let dims = shape.iter().map(|&d| Dim::Fixed(d)).collect();
            let spec = vec![InputSpec::new("x", ElemType::F32, dims)];
            let s = Session::load(&self.path, &spec, &self.opts)?;
            if self.planned.len() >= KEEP {
                self.planned.remove(0);
            }
            self.planned.push((shape.to_vec(), s));
        }
        self.planned
            .last()
            .map(|(_, s)| s)
            .ok_or_else(|| crate::error::Error::model(&self.path, "no plan"))
    }

    /// Runs the graph on one f32 tensor; returns the first output's shape and values.
    pub fn run(&mut self, shape: &[usize], data: Vec<f32>) -> Result<(Vec<usize>, Vec<f32>)> {
        let path = self.path.clone();
        let x = Value::f32(shape, data).map_err(|e| crate::error::Error::model(&path, e))?;
        let out = self.session(shape)?.run(vec![x])?;
        let first = out
            .first()
            .ok_or_else(|| crate::error::Error::model(&path, "no outputs"))?;
        let values = first
            .as_f32()
            .ok_or_else(|| {
                crate::error::Error::model(
                    &path,
                    format!("output 0 is {}, not f32", first.elem_name()),
                )
            })?
            .to_vec();
        Ok((first.shape().to_vec(), values))
    }
}
