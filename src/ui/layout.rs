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

/// Boxes (by node id) and edge paths (SVG path data), in one coordinate
/// space of `width` × `height`.
pub fn layout(plan: &Plan) -> Json {
    let mut graph = VisualGraph::new(Orientation::LeftToRight);
    let handles: Vec<_> = plan
        .nodes
        .iter()
        .map(|n| {
            // The page writes two lines in the box: the id, then the kind
            // and time. Sized for text of FONT units (about 0.6 of it per
            // character), large against the gaps between ranks so it stays
            // readable when the page fits the graph to its width.
            let chars = n.id.as_str().chars().count().max(n.spec.name.len() + 7);
            let size = Point::new(chars as f64 * FONT * 0.62 + FONT, FONT * 3.0);
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
