//! The pipeline's DAG laid out left to right by layout-rs (a Sugiyama-style
//! layout: ranks, crossing reduction, placement, spline edges), recorded as
//! boxes and paths for the page to draw and colour.

use std::collections::BTreeSet;

use kiln_engine::Plan;
use layout::core::base::Orientation;
use layout::core::format::{ClipHandle, RenderBackend};
use layout::core::geometry::Point;
use layout::core::style::StyleAttr;
use layout::std_shapes::shapes::{Arrow, Element, ShapeKind};
use layout::topo::layout::VisualGraph;
use serde_json::{json, Value as Json};

/// The size of a box's text, in layout units.
const FONT: f64 = 22.0;

/// Beyond this many nodes layout-rs takes too long (minutes at 3 000), so
/// a plain layered layout is drawn instead.
const LARGE: usize = 300;

/// Boxes (by node id) and edge paths (SVG path data), in one coordinate
/// space of `width` × `height`.
pub fn layout(plan: &Plan) -> Json {
    if plan.nodes.len() > LARGE {
        return layered(plan);
    }
    let mut graph = VisualGraph::new(Orientation::LeftToRight);
    let handles: Vec<_> = plan
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let (w, h) = box_size(plan, i);
            let size = Point::new(w, h);
            let shape = ShapeKind::new_box(n.id.as_str());
            let look = StyleAttr::simple();
            let element = Element::create_with_properties(
                shape,
                look,
                Orientation::LeftToRight,
                size,
                n.id.as_str(),
            );
            graph.add_node(element)
        })
        .collect();
    let mut pairs = BTreeSet::new();
    for edge in plan.graph.edge_indices() {
        if let Some((a, b)) = plan.graph.edge_endpoints(edge) {
            pairs.insert((a.index(), b.index()));
        }
    }
    for &(a, b) in &pairs {
        let name = format!("{}>{}", plan.nodes[a].id, plan.nodes[b].id);
        graph.add_edge(
            Arrow::simple_with_properties("", name),
            handles[a],
            handles[b],
        );
    }
    let mut recorder = Recorder::default();
    if !plan.nodes.is_empty() {
        graph.do_it(false, false, false, &mut recorder);
    }
    let (width, height) = (recorder.max.0 + 20.0, recorder.max.1 + 20.0);
    json!({ "width": width, "height": height, "nodes": recorder.nodes, "edges": recorder.edges })
}

/// The size of node `i`'s box. The page writes two lines in it: the id,
/// then the kind and time; sized for text of FONT units (about 0.6 of it
/// per character), large against the gaps between ranks so it stays
/// readable when the page fits the graph to its width.
fn box_size(plan: &Plan, i: usize) -> (f64, f64) {
    let n = &plan.nodes[i];
    let chars = n.id.as_str().chars().count().max(n.spec.name.len() + 7);
    (chars as f64 * FONT * 0.62 + FONT, FONT * 3.0)
}

/// Each node in the column of its longest path from a source, ordered in
/// its column by where its producers are (one barycentre pass), edges as
/// curves from box to box: for graphs too large for layout-rs.
fn layered(plan: &Plan) -> Json {
    let count = plan.nodes.len();
    let producers: Vec<Vec<usize>> = plan
        .nodes
        .iter()
        .map(|n| {
            let mut p: Vec<usize> = n
                .inputs
                .iter()
                .flat_map(|(_, outlets)| outlets.iter().map(|o| o.node.index()))
                .collect();
            p.sort_unstable();
            p.dedup();
            p
        })
        .collect();
    // Longest path from a source (Kahn's order; a valid plan has no cycle).
    let mut consumers = vec![Vec::new(); count];
    let mut waiting: Vec<usize> = producers.iter().map(Vec::len).collect();
    for (i, ps) in producers.iter().enumerate() {
        for &p in ps {
            consumers[p].push(i);
        }
    }
    let mut rank = vec![0usize; count];
    let mut ready: Vec<usize> = (0..count).filter(|&i| waiting[i] == 0).collect();
    while let Some(i) = ready.pop() {
        for &c in &consumers[i] {
            rank[c] = rank[c].max(rank[i] + 1);
            waiting[c] -= 1;
            if waiting[c] == 0 {
                ready.push(c);
            }
        }
    }
    let columns = rank.iter().max().map_or(0, |r| r + 1);
    let mut by_rank: Vec<Vec<usize>> = vec![Vec::new(); columns];
    for (i, &r) in rank.iter().enumerate() {
        by_rank[r].push(i);
    }
    let gap = FONT * 2.0;
    let mut y = vec![0f64; count];
    let mut x = vec![0f64; count];
    let (mut left, mut height) = (gap, 0f64);
    for column in &mut by_rank {
        // Where the producers are, on average: fewer crossing edges.
        let key = |i: &usize| {
            let ps = &producers[*i];
            if ps.is_empty() {
                0.0
            } else {
                ps.iter().map(|&p| y[p]).sum::<f64>() / ps.len() as f64
            }
        };
        column.sort_by(|a, b| key(a).total_cmp(&key(b)));
        let width = column
            .iter()
            .map(|&i| box_size(plan, i).0)
            .fold(0.0, f64::max);
        let mut top = gap;
        for &i in column.iter() {
            let (_, h) = box_size(plan, i);
            x[i] = left;
            y[i] = top;
            top += h + gap;
        }
        height = height.max(top);
        left += width + gap * 3.0;
    }
    let mut nodes = serde_json::Map::new();
    for i in 0..count {
        let (w, h) = box_size(plan, i);
        nodes.insert(
            plan.nodes[i].id.to_string(),
            json!({ "x": x[i], "y": y[i], "w": w, "h": h }),
        );
    }
    let mut edges = Vec::new();
    for (i, ps) in producers.iter().enumerate() {
        for &p in ps {
            let (pw, ph) = box_size(plan, p);
            let (_, h) = box_size(plan, i);
            let (x0, y0, x1, y1) = (x[p] + pw, y[p] + ph / 2.0, x[i], y[i] + h / 2.0);
            let mid = (x0 + x1) / 2.0;
            edges.push(json!({
                "from": plan.nodes[p].id.as_str(), "to": plan.nodes[i].id.as_str(),
                "d": format!("M {x0:.1} {y0:.1} C {mid:.1} {y0:.1}, {mid:.1} {y1:.1}, {x1:.1} {y1:.1}"),
            }));
        }
    }
    json!({ "width": left, "height": height + gap, "nodes": nodes, "edges": edges })
}

/// A render backend that keeps what the page needs: each node's box and
/// each edge's path, by the properties they were created with.
#[derive(Default)]
struct Recorder {
    nodes: serde_json::Map<String, Json>,
    edges: Vec<Json>,
    max: (f64, f64),
}

impl Recorder {
    fn grow(&mut self, p: Point) {
        self.max = (self.max.0.max(p.x), self.max.1.max(p.y));
    }
}

impl RenderBackend for Recorder {
    fn draw_rect(
        &mut self,
        xy: Point,
        size: Point,
        _: &StyleAttr,
        properties: Option<String>,
        _: Option<ClipHandle>,
    ) {
        self.grow(Point::new(xy.x + size.x, xy.y + size.y));
        if let Some(id) = properties {
            self.nodes.insert(
                id,
                json!({ "x": xy.x, "y": xy.y, "w": size.x, "h": size.y }),
            );
        }
    }

    fn draw_line(&mut self, _: Point, _: Point, _: &StyleAttr, _: Option<String>) {}

    fn draw_circle(&mut self, _: Point, _: Point, _: &StyleAttr, _: Option<String>) {}

    fn draw_text(&mut self, _: Point, _: &str, _: &StyleAttr) {}

    fn draw_arrow(
        &mut self,
        path: &[(Point, Point)],
        _: bool,
        _: (bool, bool),
        _: &StyleAttr,
        properties: Option<String>,
        _: &str,
    ) {
        // As layout-rs's SVG backend: the first pair is the exit vector,
        // then one smooth curve segment per point.
        let (Some(first), Some(second)) = (path.first(), path.get(1)) else {
            return;
        };
        for (p, c) in path {
            self.grow(*p);
            self.grow(*c);
        }
        let mut d = format!(
            "M {:.1} {:.1} C {:.1} {:.1}, {:.1} {:.1}, {:.1} {:.1}",
            first.0.x,
            first.0.y,
            first.1.x,
            first.1.y,
            second.0.x,
            second.0.y,
            second.1.x,
            second.1.y
        );
        for (p, c) in path.iter().skip(2) {
            d.push_str(&format!(" S {:.1} {:.1}, {:.1} {:.1}", p.x, p.y, c.x, c.y));
        }
        let name = properties.unwrap_or_default();
        let (from, to) = name.split_once('>').unwrap_or((&name, ""));
        self.edges.push(json!({ "from": from, "to": to, "d": d }));
    }

    fn create_clip(&mut self, _: Point, _: Point, _: usize) -> ClipHandle {
        0
    }
}
