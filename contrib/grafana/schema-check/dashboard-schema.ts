// The shape a mailprobe dashboard must have: Grafana's own dashboard model from
// @grafana/schema (generated from Grafana's schema), narrowed where a dashboard
// that works needs more than the model demands, and with each panel's options
// checked against its plugin's published option types.

import type {
  DataQuery,
  DataSourceRef,
  Dashboard,
  FieldConfig,
  FieldConfigSource,
  GridPos,
  Panel,
  RowPanel,
  VariableModel,
} from '@grafana/schema';
import type * as BarGauge from '@grafana/schema/dist/esm/raw/composable/bargauge/panelcfg/x/BarGaugePanelCfg_types.gen';
import type * as Stat from '@grafana/schema/dist/esm/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen';
import type * as StateTimeline from '@grafana/schema/dist/esm/raw/composable/statetimeline/panelcfg/x/StateTimelinePanelCfg_types.gen';
import type * as Table from '@grafana/schema/dist/esm/raw/composable/table/panelcfg/x/TablePanelCfg_types.gen';
import type * as TimeSeries from '@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen';

/**
 * JSON spells a string enum member by its value: accept exactly those values.
 * (The mapped type keeps arrays and tuples as they are.)
 */
type Json<T> = T extends string
  ? `${T}`
  : T extends number | boolean | null | undefined
    ? T
    : T extends object
      ? { [K in keyof T]: Json<T[K]> }
      : T;

/** A plugin's options may be left out: Grafana fills in the plugin's defaults. */
type DeepPartial<T> = T extends ReadonlyArray<infer E>
  ? Array<DeepPartial<E>>
  : T extends object
    ? { [K in keyof T]?: DeepPartial<T[K]> }
    : T;

/**
 * A Prometheus query as Grafana's Prometheus data source stores it (its type
 * lives in the data source plugin, not in @grafana/schema): the common query
 * fields plus these.
 */
interface PrometheusQuery extends DataQuery {
  datasource: PrometheusDataSource;
  expr: string;
  legendFormat?: string;
  instant?: boolean;
  range?: boolean;
  format?: 'time_series' | 'table' | 'heatmap';
  interval?: string;
  intervalFactor?: number;
  editorMode?: 'code' | 'builder';
  exemplar?: boolean;
}

/** Every query goes to the Prometheus chosen by the `datasource` variable. */
interface PrometheusDataSource extends DataSourceRef {
  type: 'prometheus';
  uid: '${datasource}';
}

/**
 * A panel of one plugin type. Grafana's model leaves position, data source and
 * queries optional; a panel without them is stacked at the top or shows no data.
 */
type PluginPanel<Type extends string, Options, Custom> = Omit<
  Panel,
  'type' | 'options' | 'fieldConfig' | 'targets' | 'gridPos' | 'datasource' | 'id' | 'title'
> & {
  type: Type;
  id: number;
  title: string;
  gridPos: GridPos;
  datasource: PrometheusDataSource;
  targets: [PrometheusQuery, ...PrometheusQuery[]];
  options?: DeepPartial<Options>;
  fieldConfig?: Omit<FieldConfigSource, 'defaults'> & {
    defaults: Omit<FieldConfig, 'custom'> & { custom?: DeepPartial<Custom> };
  };
};

/** The panel types this dashboard uses; any other type is an error. */
type CheckedPanel =
  | PluginPanel<'timeseries', TimeSeries.Options, TimeSeries.FieldConfig>
  | PluginPanel<'stat', Stat.Options, Record<string, never>>
  | PluginPanel<'state-timeline', StateTimeline.Options, StateTimeline.FieldConfig>
  | PluginPanel<'table', Table.Options, Table.FieldConfig>
  | PluginPanel<'bargauge', BarGauge.Options, Record<string, never>>;

type CheckedRow = Omit<RowPanel, 'panels' | 'gridPos'> & {
  gridPos: GridPos;
  panels: CheckedPanel[];
};

/** A variable; `query` variables ask the same Prometheus as the panels. */
type CheckedVariable = Omit<VariableModel, 'datasource'> & {
  datasource?: PrometheusDataSource;
};

export type CheckedDashboard = Json<
  Omit<Dashboard, 'panels' | 'templating' | 'uid' | 'title' | 'time' | 'id'> & {
    // Null, so that importing creates a dashboard instead of overwriting one by id.
    id: null;
    uid: string;
    title: string;
    time: { from: string; to: string };
    panels: Array<CheckedPanel | CheckedRow>;
    templating: { list: CheckedVariable[] };
  }
>;
