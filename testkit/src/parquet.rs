//! Parquet files written column by column, for tests of the dataset reader: valid files,
//! files with wrong columns or types, and, cut short, corrupt ones.

/// Values of one parquet column, for [`write_parquet`].
#[derive(Debug, Clone)]
pub enum ParquetValues {
    /// `BYTE_ARRAY (UTF8)`: the bytes are written as given, valid UTF-8 or not.
    Utf8(Vec<Vec<u8>>),
    Bool(Vec<bool>),
    Int64(Vec<i64>),
}

/// Write a one-row-group parquet file with REQUIRED columns (no row group when the columns
/// are empty), for tests of the dataset reader: valid files, files with wrong columns or
/// types, and, cut short, corrupt ones.
pub fn write_parquet(
    path: &std::path::Path,
    columns: &[(&str, ParquetValues)],
) -> Result<(), ::parquet::errors::ParquetError> {
    use ::parquet::column::writer::ColumnWriter;
    use ::parquet::data_type::ByteArray;
    use ::parquet::file::properties::WriterProperties;
    use ::parquet::file::writer::SerializedFileWriter;
    use std::sync::Arc;

    let fields: Vec<String> = columns
        .iter()
        .map(|(name, v)| match v {
            ParquetValues::Utf8(_) => format!("REQUIRED BYTE_ARRAY {name} (UTF8);"),
            ParquetValues::Bool(_) => format!("REQUIRED BOOLEAN {name};"),
            ParquetValues::Int64(_) => format!("REQUIRED INT64 {name};"),
        })
        .collect();
    let schema = ::parquet::schema::parser::parse_message_type(&format!(
        "message schema {{ {} }}",
        fields.join(" ")
    ))?;
    let file = std::fs::File::create(path)?;
    let mut writer = SerializedFileWriter::new(
        file,
        Arc::new(schema),
        Arc::new(WriterProperties::builder().build()),
    )?;
    let rows = columns.first().map_or(0, |(_, v)| match v {
        ParquetValues::Utf8(x) => x.len(),
        ParquetValues::Bool(x) => x.len(),
        ParquetValues::Int64(x) => x.len(),
    });
    if rows > 0 {
        let mut group = writer.next_row_group()?;
        let mut values = columns.iter();
        while let Some(mut col) = group.next_column()? {
            let (_, v) = values.next().expect("one value list per column");
            match (col.untyped(), v) {
                (ColumnWriter::ByteArrayColumnWriter(w), ParquetValues::Utf8(x)) => {
                    let x: Vec<ByteArray> = x.iter().map(|b| ByteArray::from(b.clone())).collect();
                    w.write_batch(&x, None, None)?;
                }
                (ColumnWriter::BoolColumnWriter(w), ParquetValues::Bool(x)) => {
                    w.write_batch(x, None, None)?;
                }
                (ColumnWriter::Int64ColumnWriter(w), ParquetValues::Int64(x)) => {
                    w.write_batch(x, None, None)?;
                }
                _ => unreachable!("the schema follows the values"),
            }
            col.close()?;
        }
        group.close()?;
    }
    writer.close()?;
    Ok(())
}
