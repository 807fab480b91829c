use super::*;

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn read(text: &str) -> Result<Table> {
    let dir = tempfile::tempdir().unwrap();
    read_table(&write(&dir, "t.csv", text), &TableOptions::default())
}

const ADNI_HEADER: &str = "RID,PTID,VISCODE,EXAMDATE,DX_bl,AGE,PTGENDER,MMSE,Hippocampus,Ventricles,WholeBrain,Entorhinal,Fusiform,MidTemp,ICV,IMAGEUID,DX";

#[test]
fn adnimerge_current_codes_any_column_order() {
    let t = read(&format!(
        "{ADNI_HEADER}\n\
         2,011_S_0002,bl,2005-09-08,CN,74.3,Male,28,8336,118233,1229740,4177,16559,27936,1984660,35475,CN\n\
         2,011_S_0002,m06,2006-03-06,CN,74.3,Male,,,,,,,,,,MCI\n\
         3,011_S_0003,bl,2005-09-12,AD,81.3,Female,20,5319,84599,1129830,1791,15506,18422,1920690,32237,Dementia\n\
         4,011_S_0004,bl,2005-09-13,LMCI,67.5,Male,27,,,,,,,,,\n"
    ))
    .unwrap();
    assert_eq!(t.format, TableFormat::Adnimerge);
    assert_eq!(t.rows.len(), 4);
    let r = &t.rows[0];
    assert_eq!((r.line, r.subject.as_str(), r.label, r.mmse), (2, "011_S_0002", Some(Label::NC), Some(28.0)));
    assert_eq!(r.biomarkers.hippocampus, Some(8336.0));
    assert_eq!(r.image_id.as_deref(), Some("35475"));
    assert_eq!(r.date.unwrap().to_string(), "2005-09-08");
    assert_eq!(t.rows[1].label, Some(Label::MCI));
    assert_eq!(t.rows[1].mmse, None);
    assert!((t.rows[1].age.unwrap() - 74.8).abs() < 1e-4, "age grows with the visit");
    assert_eq!(t.rows[2].label, Some(Label::AD));
    assert_eq!(t.rows[3].label, None, "blank DX is no diagnosis");
}

#[test]
fn adnimerge_old_transition_codes() {
    let t = read(
        "PTID,VISCODE,DX\n\
         a,bl,NL\n\
         a,m12,NL to MCI\n\
         b,bl,MCI to Dementia\n\
         c,bl,Dementia to NL\n\
         d,bl,MCI to NL\n\
         e,bl,Dementia to MCI\n\
         f,bl,NL to Dementia\n",
    )
    .unwrap();
    let labels: Vec<_> = t.rows.iter().map(|r| r.label.unwrap()).collect();
    use Label::*;
    assert_eq!(labels, vec![NC, MCI, AD, NC, NC, MCI, AD]);
}

#[test]
fn unknown_dx_code_names_line_and_column() {
    let err = read("PTID,VISCODE,DX\na,bl,CN\nb,bl,Probable AD\n").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("t.csv:3: column `DX`"), "{msg}");
    assert!(msg.contains("Probable AD"), "{msg}");
}

#[test]
fn bad_cells_are_errors_naming_the_cell() {
    let cases = [
        ("PTID,VISCODE,DX,MMSE\na,bl,CN,31\n", "column `MMSE`", "outside 0..30"),
        ("PTID,VISCODE,DX,MMSE\na,bl,CN,twenty\n", "column `MMSE`", "not a number"),
        ("PTID,VISCODE,DX,EXAMDATE\na,bl,CN,2005-02-30\n", "column `EXAMDATE`", "not a date"),
        ("PTID,VISCODE,DX,Hippocampus\na,bl,CN,-5\n", "column `Hippocampus`", "negative"),
        ("PTID,VISCODE,DX\n,bl,CN\n", "column `PTID`", "blank"),
        ("PTID,VISCODE,DX\na,bl,CN\na,bl,MCI\n", "t.csv:3: column `VISCODE`", "line 2"),
        ("PTID,VISCODE,DX\na,bl,CN,extra\n", "t.csv:2", "malformed CSV"),
    ];
    for (text, column, reason) in cases {
        let msg = read(text).unwrap_err().to_string();
        assert!(msg.contains(column) && msg.contains(reason), "{text:?} → {msg}");
    }
}

#[test]
fn missing_columns_and_unknown_tables() {
    let msg = read("PTID,VISCODE,MMSE\na,bl,20\n").unwrap_err().to_string();
    assert!(msg.contains("`DX`"), "{msg}");
    let msg = read("foo,bar\n1,2\n").unwrap_err().to_string();
    assert!(msg.contains("unknown table"), "{msg}");
    let msg = read("PTID,VISCODE,DX,DX\n").unwrap_err().to_string();
    assert!(msg.contains("twice"), "{msg}");
}

#[test]
fn skip_bad_rows_reports_each_skip() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "t.csv", "PTID,VISCODE,DX,MMSE\na,bl,CN,28\nb,bl,XX,27\nc,bl,AD,99\nd,bl,MCI,\n");
    let t = read_table(&p, &TableOptions { skip_bad_rows: true, ..Default::default() }).unwrap();
    assert_eq!(t.rows.iter().map(|r| r.subject.as_str()).collect::<Vec<_>>(), ["a", "d"]);
    assert_eq!(t.skipped.len(), 2);
    assert!(t.skipped[0].to_string().contains(":3:"));
    assert!(t.skipped[1].to_string().contains(":4:"));
}

#[test]
fn quoted_multiline_cell_keeps_physical_lines() {
    let t = read("PTID,VISCODE,DX,NOTE\na,bl,CN,\"two\nlines\"\nb,bl,AD,x\n").unwrap();
    assert_eq!(t.rows[1].line, 4);
}

#[test]
fn oasis_groups_and_converted_policy() {
    let text = "Subject ID,MRI ID,Group,Visit,MR Delay,M/F,Hand,Age,EDUC,SES,MMSE,CDR,eTIV,nWBV,ASF\n\
        OAS2_0001,OAS2_0001_MR1,Nondemented,1,0,M,R,87,14,2,27,0,1987,0.696,0.883\n\
        OAS2_0002,OAS2_0002_MR1,Demented,1,0,M,R,75,12,,23,0.5,1678,0.736,1.046\n\
        OAS2_0003,OAS2_0003_MR1,Converted,1,0,F,R,80,12,4,29,0,1689,0.712,1.039\n\
        OAS2_0003,OAS2_0003_MR2,Converted,2,560,F,R,81,12,4,27,0.5,1701,0.705,1.032\n";
    let t = read(text).unwrap();
    assert_eq!(t.format, TableFormat::Oasis2);
    let labels: Vec<_> = t.rows.iter().map(|r| r.label).collect();
    assert_eq!(labels, vec![Some(Label::NC), Some(Label::AD), None, None]);
    assert!((t.rows[0].biomarkers.whole_brain.unwrap() - 1987.0 * 0.696).abs() < 1e-9);
    assert_eq!(t.rows[3].image_id.as_deref(), Some("OAS2_0003_MR2"));
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "o.csv", text);
    let by_cdr = read_table(&p, &TableOptions { converted: ConvertedPolicy::ByCdr, ..Default::default() }).unwrap();
    assert_eq!(by_cdr.rows[2].label, Some(Label::NC));
    assert_eq!(by_cdr.rows[3].label, Some(Label::AD));
    let msg = read("Subject ID,MRI ID,Group\nx,x_MR1,Healthy\n").unwrap_err().to_string();
    assert!(msg.contains(":2: column `Group`"), "{msg}");
}
