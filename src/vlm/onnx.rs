//! Loading the ONNX graphs of the published VLM layouts into [`Session`]s, with the checks every
//! architecture needs: the file is there, it parses, it uses only operators tract has. The
//! protobuf work itself is the engine's ([`OnnxFile`]); this adds the VLM's error kinds.

use std::path::Path;

use super::contract::VlmError;
use crate::engine::onnx::{DeclaredInput, OnnxFile};
use crate::engine::session::{InputSpec, Session, SessionOptions};

/// Loads one graph of the layout, turning a non-standard operator into [`VlmError::Unsupported`].
pub(crate) fn load_graph(
    path: &Path,
    specs: &[InputSpec],
    opts: &SessionOptions,
) -> Result<Session, VlmError> {
    load_graph_with(path, opts, &|_| Ok(specs.to_vec()))
}

/// Chooses the input facts of a graph from the inputs its file declares.
pub(crate) type SpecsFor<'a> = dyn Fn(&[DeclaredInput]) -> Result<Vec<InputSpec>, VlmError> + 'a;

/// Like [`load_graph`], with the input facts chosen once the file's declared inputs are known.
pub(crate) fn load_graph_with(
    path: &Path,
    opts: &SessionOptions,
    specs: &SpecsFor<'_>,
) -> Result<Session, VlmError> {
    if !path.is_file() {
        return Err(VlmError::Load {
            path: path.to_path_buf(),
            reason: "file not found (is the variant downloaded? `lookout models pull`)".into(),
        });
    }
    let mut file = OnnxFile::read(path).map_err(|e| engine_err(path, e))?;
    if let Some(f) = file.foreign_op() {
        return Err(VlmError::Unsupported {
            path: path.to_path_buf(),
            reason: format!(
                "operator {}.{} (node '{}') exists only in onnxruntime; tract runs standard \
                 ONNX operators: use the fp32, _int8, _uint8 or _quantized files instead of the _q4/_q4f16/_bnb4 ones",
                f.domain, f.op, f.node
            ),
        });
    }
    let specs = specs(&file.declared_inputs())?;
    file.merge_duplicate_nonzero();
    Session::from_file(file, &specs, opts).map_err(|e| engine_err(path, e))
}

fn engine_err(path: &Path, e: crate::Error) -> VlmError {
    match e {
        crate::Error::Model { path, reason } => VlmError::Load { path, reason },
        crate::Error::Io { path, source } => VlmError::Load {
            path,
            reason: source.to_string(),
        },
        other => VlmError::Load {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    }
}
