//! Disk I/O: reading and writing pieces in place (`Content`), and the
//! download target (`Partial`): a partial file or tree next to the final
//! destination, verified on resume and renamed into place when complete.

mod buf;
mod content;
mod partial;

pub use buf::PieceBuf;
pub use content::Content;
pub use partial::{Partial, StorageError};
