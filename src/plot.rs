//! PNG figures: training curves, confusion matrices and heat-map overlays, drawn with plotters' bitmap backend and
//! an embedded font (no system font libraries), encoded with `png`, and written atomically.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};

use crate::data::volume::Volume;
use crate::error::{Error, Result};

const FONT: &str = "sans-serif";

fn font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Registering the same family twice is the only failure, and Once rules it out.
        let _ = register_font(FONT, FontStyle::Normal, epaint_default_fonts::UBUNTU_LIGHT);
    });
}

fn draw_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::config(path.display().to_string(), format!("drawing the figure: {e}"))
}

/// Render `w`×`h` pixels with `draw`, then write them as an RGB PNG at `path`.
fn render(
    path: &Path,
    (w, h): (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend, plotters::coord::Shift>) -> Result<()>,
) -> Result<()> {
    font();
    let mut pixels = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area();
        draw(&root)?;
        root.present().map_err(|e| draw_err(path, e))?;
    }
    crate::util::write_atomic(path, |out| {
        let mut enc = png::Encoder::new(out, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(std::io::Error::other)?;
        writer.write_image_data(&pixels).map_err(std::io::Error::other)?;
        writer.finish().map_err(std::io::Error::other)
    })
}

/// One line of a panel: a name and its (x, y) points.
pub type Series<'a> = (&'a str, Vec<(f64, f64)>);

/// Panels side by side, each with its title and lines, sharing the x label.
pub fn curves(path: &Path, x_label: &str, panels: &[(&str, Vec<Series>)]) -> Result<()> {
    let width = 520 * panels.len().max(1) as u32;
    render(path, (width, 400), |root| {
        let areas = root.split_evenly((1, panels.len().max(1)));
        for ((title, series), area) in panels.iter().zip(areas) {
            // Only finite points are drawn and bound the axes.
            let series: Vec<(&str, Vec<(f64, f64)>)> = series
                .iter()
                .map(|(name, p)| (*name, p.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect()))
                .collect();
            let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
            for &(x, y) in series.iter().flat_map(|(_, p)| p) {
                (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
            }
            if x0 > x1 {
                (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
            }
            let pad = ((y1 - y0) * 0.08).max(1e-3);
            let mut chart = ChartBuilder::on(&area)
                .caption(*title, (FONT, 22))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(56)
                .build_cartesian_2d(x0..x1.max(x0 + 1.0), (y0 - pad)..(y1 + pad))
                .map_err(|e| draw_err(path, e))?;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .label_style((FONT, 14))
                .axis_desc_style((FONT, 15))
                .draw()
                .map_err(|e| draw_err(path, e))?;
            for (i, (name, points)) in series.into_iter().enumerate() {
                let color = Palette99::pick(i).to_rgba();
                chart
                    .draw_series(LineSeries::new(points, color.stroke_width(2)))
                    .map_err(|e| draw_err(path, e))?
                    .label(name)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
            }
            chart
                .configure_series_labels()
                .label_font((FONT, 14))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.3))
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(|e| draw_err(path, e))?;
        }
        Ok(())
    })
}

/// A confusion matrix: rows are the true classes, columns the predicted ones, each cell
/// shaded by its share of the row and labelled with its count.
pub fn confusion(path: &Path, title: &str, classes: &[&str], matrix: &[Vec<usize>]) -> Result<()> {
    let k = classes.len();
    if k == 0 || matrix.len() != k || matrix.iter().any(|r| r.len() != k) {
        return Err(draw_err(path, format!("a {k}-class confusion matrix needs {k}×{k} counts")));
    }
    render(path, (140 + 110 * k as u32, 130 + 110 * k as u32), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 20))
            .margin(14)
            .x_label_area_size(48)
            .y_label_area_size(70)
            .build_cartesian_2d((0..k - 1).into_segmented(), (0..k - 1).into_segmented())
            .map_err(|e| draw_err(path, e))?;
        // Row t of the matrix is drawn at y = k − 1 − t, so the first class sits on top.
        let name = |v: &SegmentValue<usize>, flip: bool| match v {
            SegmentValue::CenterOf(i) if *i < k => classes[if flip { k - 1 - i } else { *i }].to_string(),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("predicted")
            .y_desc("true")
            .x_labels(k)
            .y_labels(k)
            .x_label_formatter(&|v| name(v, false))
            .y_label_formatter(&|v| name(v, true))
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 15))
            .draw()
            .map_err(|e| draw_err(path, e))?;
        let centred = Pos::new(HPos::Center, VPos::Center);
        for (t, row) in matrix.iter().enumerate() {
            let total = row.iter().sum::<usize>().max(1) as f64;
            for (p, &n) in row.iter().enumerate() {
                let share = n as f64 / total;
                let y = k - 1 - t;
                let shade = RGBColor((255.0 - 200.0 * share) as u8, (255.0 - 140.0 * share) as u8, 255);
                let cell = [
                    (SegmentValue::Exact(p), SegmentValue::Exact(y)),
                    (SegmentValue::Exact(p + 1), SegmentValue::Exact(y + 1)),
                ];
                chart
                    .draw_series(std::iter::once(Rectangle::new(cell, shade.filled())))
                    .map_err(|e| draw_err(path, e))?;
                let colour = if share > 0.6 { WHITE } else { BLACK };
                let style = (FONT, 22).into_font().color(&colour).pos(centred);
                let label = Text::new(format!("{n}"), (SegmentValue::CenterOf(p), SegmentValue::CenterOf(y)), style);
                chart.plotting_area().draw(&label).map_err(|e| draw_err(path, e))?;
            }
        }
        Ok(())
    })
}

/// "Hot" colour map: black → red → yellow → white over t ∈ [0, 1].
fn hot(t: f64) -> (f64, f64, f64) {
    let t = t.clamp(0.0, 1.0);
    ((3.0 * t).min(1.0), (3.0 * t - 1.0).clamp(0.0, 1.0), (3.0 * t - 2.0).clamp(0.0, 1.0))
}

/// One row of a heat-map figure: its label, the map (the scan's grid), where the slices cross,
/// and optionally the structure the map should find (outlined in cyan).
pub struct HeatRow<'a> {
    pub label: String,
    pub heat: &'a Volume,
    pub at: [usize; 3],
    pub structure: Option<&'a [bool]>,
}

/// Heat maps over a scan, one row each: three orthogonal slices through the row's `at`
/// (sagittal, coronal and axial in the RAS+ storage axes, superior and anterior up), the scan in
/// grey with the heat blended in by its value (nothing below 15% of the row's maximum), the
/// structure's outline if given, and a colour bar from 0 to the row's maximum. `zoom` pixels
/// per voxel (0: fit about 256 pixels per panel).
pub fn heat_overlay(path: &Path, title: &str, scan: &Volume, rows: &[HeatRow], zoom: usize) -> Result<()> {
    if let Some(r) = rows.iter().find(|r| r.heat.shape != scan.shape) {
        return Err(draw_err(
            path,
            format!("the scan {:?} and the map {:?} differ in shape", scan.shape, r.heat.shape),
        ));
    }
    let [n0, n1, n2] = scan.shape;
    let zoom = if zoom == 0 { (256 / n0.max(n1).max(n2)).max(1) } else { zoom } as i32;
    let range = |v: &[f32]| v.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
    let (s_lo, s_hi) = range(&scan.data);
    // Each panel: (width axis, height axis, fixed axis); height runs upwards.
    let panels = [("sagittal", 1usize, 2usize, 0usize), ("coronal", 0, 2, 1), ("axial", 0, 1, 2)];
    let size = |a: usize| scan.shape[a] as i32 * zoom;
    let widths: Vec<i32> = panels.iter().map(|p| size(p.1)).collect();
    let height = panels.iter().map(|p| size(p.2)).max().unwrap_or(1);
    let (pad, top, head, bar) = (10i32, 30i32, 34i32, 76i32);
    let row_h = head + height + pad;
    let w = pad + widths.iter().map(|w| w + pad).sum::<i32>() + bar;
    let h = top + row_h * rows.len().max(1) as i32;
    let at_index = |idx: [usize; 3]| (idx[0] * n1 + idx[1]) * n2 + idx[2];
    render(path, (w as u32, h as u32), |root| {
        let left_top = Pos::new(HPos::Left, VPos::Top);
        let text = |s: String, x: i32, y: i32, size: u32| {
            root.draw(&Text::new(s, (x, y), (FONT, size).into_font().color(&BLACK).pos(left_top)))
                .map_err(|e| draw_err(path, e))
        };
        text(title.to_string(), pad, 6, 17)?;
        for (r, row) in rows.iter().enumerate() {
            let y0 = top + r as i32 * row_h;
            let h_hi = range(&row.heat.data).1.max(1e-12);
            let mut x0 = pad;
            text(row.label.clone(), pad, y0 + 2, 13)?;
            for (p, pw) in panels.iter().zip(&widths) {
                let (name, ax_w, ax_h, fixed) = *p;
                text(format!("{name} {}", row.at[fixed]), x0, y0 + 19, 11)?;
                let py0 = y0 + head;
                for py in 0..size(ax_h) {
                    for px in 0..*pw {
                        let mut idx = row.at;
                        idx[ax_w] = (px / zoom) as usize;
                        idx[ax_h] = scan.shape[ax_h] - 1 - (py / zoom) as usize;
                        let i = at_index(idx);
                        let g = ((scan.data[i] - s_lo) / (s_hi - s_lo).max(1e-12)).clamp(0.0, 1.0) as f64;
                        let t = (row.heat.data[i] / h_hi).clamp(0.0, 1.0) as f64;
                        let a = if t < 0.15 { 0.0 } else { 0.7 * t };
                        let (cr, cg, cb) = hot(t);
                        let mix = |c: f64| (((1.0 - a) * g + a * c).clamp(0.0, 1.0) * 255.0) as u8;
                        let mut colour = RGBColor(mix(cr), mix(cg), mix(cb));
                        if let Some(inside) = row.structure {
                            // A voxel of the structure with a neighbour outside it, in this plane.
                            let edge = inside[i]
                                && [(1i64, 0i64), (-1, 0), (0, 1), (0, -1)].iter().any(|&(dw, dh)| {
                                    let (u, v) = (idx[ax_w] as i64 + dw, idx[ax_h] as i64 + dh);
                                    let (nu, nv) = (scan.shape[ax_w] as i64, scan.shape[ax_h] as i64);
                                    if u < 0 || v < 0 || u >= nu || v >= nv {
                                        return true;
                                    }
                                    let mut j = idx;
                                    j[ax_w] = u as usize;
                                    j[ax_h] = v as usize;
                                    !inside[at_index(j)]
                                });
                            if edge {
                                colour = RGBColor(0, 230, 255);
                            }
                        }
                        root.draw_pixel((x0 + px, py0 + py), &colour).map_err(|e| draw_err(path, e))?;
                    }
                }
                x0 += pw + pad;
            }
            // The colour bar, 0 at the bottom.
            let bx = x0 + 4;
            for py in 0..height {
                let (cr, cg, cb) = hot(1.0 - py as f64 / (height - 1).max(1) as f64);
                let c = RGBColor((cr * 255.0) as u8, (cg * 255.0) as u8, (cb * 255.0) as u8);
                for px in 0..14 {
                    root.draw_pixel((bx + px, y0 + head + py), &c).map_err(|e| draw_err(path, e))?;
                }
            }
            text(format!("{h_hi:.2e}"), bx + 17, y0 + head, 11)?;
            text("0".to_string(), bx + 17, y0 + head + height - 12, 11)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_size(path: &Path) -> (u32, u32) {
        let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
        let reader = decoder.read_info().unwrap();
        let info = reader.info();
        (info.width, info.height)
    }

    #[test]
    fn curves_and_confusion_are_pngs_with_ink() {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("curves.png");
        let loss: Vec<(f64, f64)> = (0..10).map(|e| (e as f64, 4.0 - 0.2 * e as f64)).collect();
        let acc: Vec<(f64, f64)> = (0..10).map(|e| (e as f64, 0.3 + 0.04 * e as f64)).collect();
        curves(&c, "epoch", &[("loss", vec![("train", loss)]), ("balanced accuracy", vec![("validation", acc)])])
            .unwrap();
        assert_eq!(png_size(&c), (1040, 400));
        let m = dir.path().join("confusion.png");
        confusion(&m, "test", &["NC", "MCI", "AD"], &[vec![5, 1, 0], vec![2, 3, 1], vec![0, 1, 4]]).unwrap();
        assert_eq!(png_size(&m), (470, 460));
        // Not blank: the decoded image has dark pixels (text, lines).
        let mut reader =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&m).unwrap())).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        reader.next_frame(&mut buf).unwrap();
        assert!(buf.chunks(3).filter(|p| p.iter().all(|&v| v < 80)).count() > 100);
        assert!(confusion(&m, "bad", &["NC", "AD"], &[vec![1]]).is_err());
    }

    #[test]
    fn heat_overlays_outline_the_structure_and_refuse_other_grids() {
        use crate::data::volume::identity;
        let dir = tempfile::tempdir().unwrap();
        let scan = Volume::from_fn([8, 10, 12], identity(), |i, j, k| (i + j + k) as f32);
        let heat = Volume::from_fn([8, 10, 12], identity(), |i, _, _| if i == 4 { 1.0 } else { 0.0 });
        let inside: Vec<bool> = heat.data.iter().map(|&h| h > 0.0).collect();
        let p = dir.path().join("heat.png");
        let row = HeatRow { label: "x".into(), heat: &heat, at: [4, 5, 6], structure: Some(&inside) };
        heat_overlay(&p, "t", &scan, &[row], 3).unwrap();
        let mut reader =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&p).unwrap())).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        reader.next_frame(&mut buf).unwrap();
        assert!(buf.chunks(3).any(|c| c == [0, 230, 255]), "the outline is drawn");
        let other = Volume::from_fn([8, 10, 11], identity(), |_, _, _| 0.0);
        let bad = HeatRow { label: "x".into(), heat: &other, at: [0, 0, 0], structure: None };
        assert!(heat_overlay(&p, "t", &scan, &[bad], 3).is_err());
    }
}
