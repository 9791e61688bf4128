//! BulkExport: an organisation's month as ZIP parts in the store, with links by e-mail.
//!
//! `controller` reconciles the resource and runs the export as a Job whose program is in `job`;
//! `month` counts the month in the organisation's time zone; `parts` plans and writes the
//! archives with `manifest`s for the organisation's spreadsheet; `links` signs download links; `notify` sends the e-mail;
//! `schedule` plans a ScheduledBulkExport's monthly exports.

pub mod controller;
pub mod links;
pub mod manifest;
pub mod month;
pub mod names;
pub mod notify;
pub mod parts;
pub mod schedule;
