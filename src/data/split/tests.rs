use super::*;
use std::collections::HashSet;

fn cohort(n_nc: usize, n_mci: usize, n_ad: usize) -> Vec<SubjectStratum> {
    let mut out = Vec::new();
    for (label, n) in [(Label::NC, n_nc), (Label::MCI, n_mci), (Label::AD, n_ad)] {
        for i in 0..n {
            out.push(SubjectStratum { subject: format!("{label}_{i:03}"), label });
        }
    }
    out
}

#[test]
fn folds_partition_subjects_and_are_stratified() {
    let subjects = cohort(23, 31, 17);
    for seed in 0..5 {
        let split = make_split(&subjects, &SplitConfig { folds: 5, val_fraction: 0.15, seed }).unwrap();
        assert_eq!(split.folds(), 5);
        // test sets partition the subjects
        let mut seen = HashSet::new();
        for f in 0..5 {
            for s in split.subjects(f, Part::Test) {
                assert!(seen.insert(s.to_string()), "{s} tested twice");
            }
        }
        assert_eq!(seen.len(), subjects.len());
        for f in 0..5 {
            // every subject exactly once per fold, in one part
            let fold = split.fold(f);
            assert_eq!(fold.len(), subjects.len());
            let val = split.subjects(f, Part::Val).len();
            assert!((9..=12).contains(&val), "val size {val}");
        }
        // per class, fold test counts differ by at most one
        for label in Label::ALL {
            let counts: Vec<usize> = (0..5)
                .map(|f| {
                    split.rows.iter().filter(|r| r.fold == f && r.part == Part::Test && r.stratum == label).count()
                })
                .collect();
            let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            assert!(hi - lo <= 1, "{label}: {counts:?}");
        }
        check_leakage(Path::new("x"), &split.rows).unwrap();
    }
}

#[test]
fn same_seed_same_split_other_seed_differs() {
    let subjects = cohort(10, 10, 10);
    let cfg = SplitConfig::default();
    assert_eq!(make_split(&subjects, &cfg).unwrap(), make_split(&subjects, &cfg).unwrap());
    let other = make_split(&subjects, &SplitConfig { seed: 7, ..cfg }).unwrap();
    assert_ne!(make_split(&subjects, &cfg).unwrap(), other);
}

#[test]
fn write_read_round_trip_and_leakage_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("split.csv");
    let split = make_split(&cohort(6, 6, 6), &SplitConfig::default()).unwrap();
    write_split(&p, &split).unwrap();
    assert_eq!(read_split(&p).unwrap(), split);

    // the same subject in train and test of fold 0
    let mut text = std::fs::read_to_string(&p).unwrap();
    let test_subject = split.subjects(0, Part::Test)[0].to_string();
    text.push_str(&format!("0,{test_subject},train,NC\n"));
    std::fs::write(&p, &text).unwrap();
    let msg = read_split(&p).unwrap_err().to_string();
    assert!(msg.contains(&format!("subject {test_subject} is in")) && msg.contains("of fold 0"), "{msg}");

    // a subject tested in two folds (DEFT's slip)
    let leak = "fold,subject,part,stratum\n0,a,test,NC\n0,b,train,NC\n1,a,test,NC\n1,b,val,NC\n";
    std::fs::write(&p, leak).unwrap();
    let msg = read_split(&p).unwrap_err().to_string();
    assert!(msg.contains("subject a is in the test set of folds [0, 1]"), "{msg}");

    std::fs::write(&p, "fold,subject,part,stratum\n0,a,holdout,NC\n").unwrap();
    assert!(read_split(&p).unwrap_err().to_string().contains(":2:"));
}

#[test]
fn subsample_by_whole_subjects() {
    let subjects: Vec<(SubjectStratum, usize)> =
        cohort(20, 20, 20).into_iter().enumerate().map(|(i, s)| (s, 1 + i % 4)).collect();
    let total: usize = subjects.iter().map(|(_, n)| n).sum();
    let counts: HashMap<&str, usize> = subjects.iter().map(|(s, n)| (s.subject.as_str(), *n)).collect();
    for target in [20, 50, 100] {
        let keep = subsample_subjects(&subjects, target, 3);
        let got: usize = keep.iter().map(|s| counts[s.as_str()]).sum();
        assert!(got <= target && got + 4 > target, "target {target} got {got}");
        for label in ["NC", "MCI", "AD"] {
            assert!(keep.iter().any(|s| s.starts_with(label)), "{label} missing at {target}");
        }
    }
    assert_eq!(subsample_subjects(&subjects, total + 10, 3).len(), 60);
}

#[test]
fn bad_configs() {
    let s = cohort(2, 2, 2);
    assert!(make_split(&s, &SplitConfig { folds: 1, ..Default::default() }).is_err());
    assert!(make_split(&s, &SplitConfig { folds: 7, ..Default::default() }).is_err());
    assert!(make_split(&s, &SplitConfig { val_fraction: 1.0, ..Default::default() }).is_err());
}

#[test]
fn strata_use_first_labelled_visit() {
    let st =
        strata([("a", None), ("a", Some(Label::MCI)), ("a", Some(Label::AD)), ("b", Some(Label::NC)), ("c", None)]);
    assert_eq!(
        st,
        vec![
            SubjectStratum { subject: "a".into(), label: Label::MCI },
            SubjectStratum { subject: "b".into(), label: Label::NC },
        ]
    );
}
